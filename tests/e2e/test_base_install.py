"""The router installed without extras (``pip install .`` in a fresh environment): every
built-in plug-in is described by ``router schema`` and checked by ``router validate``;
``router run`` of a mapping whose client library is missing stops with one line naming
the extra to install."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

KAFKA = """\
functions:
  echo: {invoker: python, handler: router.examples.hello:handler}
mappings:
  - name: orders
    function: echo
    source:
      type: kafka
      bootstrap_servers: 127.0.0.1:9092
      topics: [orders]
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with the router and its required dependencies only."""
    root = tmp_path_factory.mktemp("base-install")
    # A copy of the sources without the checkout's own environment and caches.
    source = root / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", ".cache", "__pycache__", "*.egg-info"),
    )
    venv = root / "venv"
    # No pip of its own (the test environment's pip installs into it) and no bytecode
    # compiled ahead: the same installation, in half the time.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    subprocess.run(
        [*pip, "install", "-q", "--no-compile", "--disable-pip-version-check", str(source)],
        check=True,
        capture_output=True,
    )
    return venv


def _router(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "router"), *args], capture_output=True, text=True, cwd=cwd
    )


def test_no_client_library_is_installed(base: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [
            str(base / "bin" / "python"),
            "-c",
            "import importlib.util as u; print([m for m in ('aiokafka', 'aioboto3', 'aio_pika',"
            " 'redis', 'nats', 'cryptography') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert found.stdout.strip() == "[]"


def _branch(union: dict[str, Any], key: str, type_name: str) -> dict[str, Any]:
    (branch,) = [b for b in union["oneOf"] if b["properties"][key] == {"const": type_name}]
    found: dict[str, Any] = branch
    return found


def test_schema_describes_every_plugin(base: Path, tmp_path: Path) -> None:
    result = _router(base, "schema", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    (mapping, _ported) = schema["properties"]["mappings"]["items"]["anyOf"]
    sources = mapping["properties"]["source"]
    for union in (sources, schema["properties"]["functions"]["additionalProperties"]):
        for branch in union["oneOf"]:
            assert "not known to this build" not in branch.get("description", ""), branch
            assert branch["additionalProperties"] is False, branch
    kafka = _branch(sources, "type", "kafka")["properties"]
    assert {"bootstrap_servers", "topics", "consumer_group_id"} <= kafka.keys()
    assert "queue_url" in _branch(sources, "type", "sqs")["properties"]
    assert "bucket" in _branch(sources, "type", "s3")["properties"]
    for type_name in ("kinesis", "dynamodb", "rabbitmq", "redis", "nats", "sns"):
        assert len(_branch(sources, "type", type_name)["properties"]) > 1, type_name
    lambda_ = _branch(
        schema["properties"]["functions"]["additionalProperties"], "invoker", "lambda"
    )
    assert "function_name" in lambda_["properties"]


def test_validate_checks_settings_and_run_names_the_extra(base: Path, tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        KAFKA.replace("topics: [orders]", "topics: [orders]\n      sesion_timeout_ms: 1")
    )
    bad = _router(base, "validate", str(config), cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        f"{config}:10: mappings[0].source.sesion_timeout_ms: unknown key 'sesion_timeout_ms'"
    ), bad.stderr
    config.write_text(KAFKA)
    fine = _router(base, "validate", str(config), cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert fine.stdout == f"{config}: OK (1 functions, 1 mappings)\n"
    run = _router(base, "run", "--config", str(config), "--http-listen", "off", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr == (
        f"{config}:7: mappings[0].source.type: the source type 'kafka' needs the 'aiokafka' "
        "library: pip install 'event-router[kafka]'\n"
    )
