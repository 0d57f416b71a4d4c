"""A source type added by another distribution: one module and one entry point
(tests/fixtures/third_party: ``router_pigeon.py`` and its ``entry_points.txt``), found
without any change to the router, with its own settings, traits and filter view."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from router import registry
from router.config import load_config_text
from router.errors import ConfigErrors
from tests.helpers import router_command, start_router_process, terminate

THIRD_PARTY = Path(__file__).resolve().parents[1] / "fixtures" / "third_party"
REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
functions:
  echo: {invoker: python, handler: pigeon_handler:handle}
mappings:
  - name: pigeons
    function: echo
    source: {type: pigeon, loft: ./loft.txt}
    filter_criteria:
      filters:
        - pattern: '{"message": {"from": [{"anything-but": "hawk"}]}}'
"""

HANDLER = """\
import json

def handle(event, context):
    with open("events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""


def test_the_entry_point_makes_the_type_known(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigErrors, match="unknown source type 'pigeon'; known types: "):
        load_config_text(CONFIG, "c.yaml")
    monkeypatch.syspath_prepend(str(THIRD_PARTY))
    assert registry.plugins("source")["pigeon"] == "router_pigeon:PigeonSource"
    (mapping,) = load_config_text(CONFIG, "c.yaml").mappings
    assert mapping.source.type == "pigeon"
    assert mapping.source.settings.loft == "./loft.txt"  # type: ignore[attr-defined]
    assert mapping.maximum_retry_attempts == 2, "the defaults of the source's own traits"
    bad = CONFIG.replace("loft: ./loft.txt", "loft: ./loft.txt, roof: 1")
    with pytest.raises(ConfigErrors) as e:
        load_config_text(bad, "c.yaml")
    assert str(e.value) == "c.yaml:6: mappings[0].source.roof: unknown key 'roof'; known keys: loft"


def _env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO), str(THIRD_PARTY)])
    return env


def _events(cwd: Path) -> list[dict[str, object]]:
    path = cwd / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _accounted(db: Path) -> int:
    """Records of the mapping that were filtered out or delivered (its stats row)."""
    try:
        with sqlite3.connect(db) as connection:
            row = connection.execute("SELECT filtered + invoked FROM mapping_stats").fetchone()
    except sqlite3.Error:
        return 0  # not created yet
    return int(row[0]) if row else 0


def test_router_runs_a_mapping_of_the_new_type(tmp_path: Path) -> None:
    (tmp_path / "router.yaml").write_text(CONFIG)
    (tmp_path / "pigeon_handler.py").write_text(HANDLER)
    (tmp_path / "loft.txt").write_text(
        '{"from": "Paris", "text": "coo"}\n{"from": "hawk", "text": "screech"}\n'
        '{"from": "Lyon", "text": "coo coo"}\nnot json\n'
    )
    env = _env(tmp_path)

    validate = subprocess.run(
        [*router_command(), "validate", "--config", "router.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert validate.returncode == 0, validate.stderr

    schema = subprocess.run(
        [*router_command(), "schema"], cwd=tmp_path, env=env, capture_output=True, check=True
    )
    # A mapping is one with a source: block, or one of pasted SAM properties.
    mapping = json.loads(schema.stdout)["properties"]["mappings"]["items"]
    (with_source,) = [m for m in mapping["anyOf"] if "source" in m.get("required", [])]
    source = with_source["properties"]["source"]
    (branch,) = [b for b in source["oneOf"] if b["properties"]["type"] == {"const": "pigeon"}]
    assert branch["required"] == ["type", "loft"]

    match = subprocess.run(
        [
            *router_command(),
            "test-pattern",
            "--source",
            "pigeon",
            "--pattern",
            '{"message": {"from": ["Paris"]}}',
            "--event",
            json.dumps({"Records": [{"line": 0, "message": '{"from": "Paris"}'}]}),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (match.returncode, match.stdout) == (0, "record 0: match\n"), match.stderr

    store = f"sqlite:///{tmp_path / 'router.db'}"
    log = tmp_path / "router.log"
    proc = start_router_process(tmp_path / "router.yaml", store, tmp_path, log, env)
    try:
        deadline = time.monotonic() + 30
        while _accounted(tmp_path / "router.db") < 4 and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    finally:
        assert terminate(proc) == 0, log.read_text()
    lines = [e["Records"][0]["line"] for e in _events(tmp_path)]  # type: ignore[index]
    # The hawk is filtered out, and so is the line that is not JSON (a pattern inside a
    # payload never matches plain text).
    assert sorted(lines) == [0, 2]


def test_without_any_entry_point_the_error_says_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "plugins", lambda kind: {})
    with pytest.raises(ConfigErrors) as e:
        load_config_text(CONFIG, "c.yaml")
    assert str(e.value).splitlines() == [
        "c.yaml:2: functions.echo.invoker: unknown invoker type 'python': no invoker types are "
        "installed; install the router (pip install -e . in a checkout) to register them",
        "c.yaml:6: mappings[0].source.type: unknown source type 'pigeon': no source types are "
        "installed; install the router (pip install -e . in a checkout) to register them",
    ]
