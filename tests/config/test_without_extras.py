"""Every built-in plug-in's class imports without its client library (the check behind
``router schema`` and ``router validate`` on an installation without extras, fast: the
libraries are hidden instead of uninstalled; tests/e2e/test_base_install.py installs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HIDDEN = (
    "aiokafka aioboto3 aiobotocore botocore boto3 aio_pika aiormq pamqp redis nats cryptography"
)

PROBE = """\
import json
from router import registry

out = {}
for kind in ("source", "invoker", "destination"):
    for name in registry.plugins(kind):
        cls = registry.load(kind, name)
        try:
            registry.load(kind, name, to_run=True)
            out[f"{kind} {name}"] = [cls.Settings.__name__, None]
        except ImportError as e:
            out[f"{kind} {name}"] = [cls.Settings.__name__, str(e)]
print(json.dumps(out))
"""


def test_every_plugin_loads_without_its_library(tmp_path: Path) -> None:
    for library in HIDDEN.split():
        (tmp_path / library).mkdir()
        (tmp_path / library / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{library}'\", name='{library}')\n"
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    needs = {key: error for key, (_settings, error) in loaded.items() if error}
    hint = "needs the 'aiokafka' library: pip install 'event-router[kafka]'"
    assert needs["source kafka"] == f"the source type 'kafka' {hint}"
    assert needs["destination kafka"] == f"the destination type 'kafka' {hint}"
    assert needs["invoker lambda"] == (
        "the invoker type 'lambda' needs the 'aioboto3' library: pip install 'event-router[aws]'"
    )
    extras = {key: error.rsplit("[", 1)[1].rstrip("]'") for key, error in needs.items()}
    assert extras == {
        "source kafka": "kafka",
        "source sqs": "aws",
        "source s3": "aws",
        "source kinesis": "aws",
        "source dynamodb": "aws",
        "source rabbitmq": "rabbitmq",
        "source redis": "redis",
        "source nats": "nats",
        "source sns": "sns",
        "invoker lambda": "aws",
        "destination kafka": "kafka",
        "destination sqs": "aws",
        "destination sns": "aws",
        "destination s3": "aws",
        "destination kinesis": "aws",
        "destination rabbitmq": "rabbitmq",
        "destination redis": "redis",
        "destination nats": "nats",
    }
    assert loaded["source directory"] == ["DirectorySettings", None]
