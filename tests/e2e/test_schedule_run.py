"""A schedule through the `router run` process: the Scheduled Event arrives at its time, once,
and a bad cron expression is refused with its location."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.helpers import router_command, start_router_process, terminate

HANDLER = """\
import json

def handle(event, context):
    with open("fires.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""


def _config(expression: str) -> str:
    return f"""\
functions:
  tick:
    invoker: python
    handler: tick_handler:handle
mappings:
  - name: nightly-report
    function: tick
    source:
      type: schedule
      schedule: {expression}
"""


def test_at_schedule_fires_once_with_the_scheduled_event_shape(tmp_path: Path) -> None:
    # After the router is up (a loaded machine took 7 s): an at() time that passed before
    # its schedule first ran is not fired ("Missed fires" in docs/sources-directory-schedule.md).
    due = (datetime.now(UTC) + timedelta(seconds=12)).replace(microsecond=0)
    (tmp_path / "router.yaml").write_text(_config(f"at({due:%Y-%m-%dT%H:%M:%S})"))
    (tmp_path / "tick_handler.py").write_text(HANDLER)
    log = tmp_path / "router.log"
    proc = start_router_process(
        tmp_path / "router.yaml", f"sqlite:///{tmp_path / 'router.db'}", tmp_path, log
    )
    fires = tmp_path / "fires.jsonl"
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not fires.exists():
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        time.sleep(1.0)  # a second fire for the same time would show up here
    finally:
        assert terminate(proc) == 0, log.read_text()
    assert fires.exists(), log.read_text()
    events = [json.loads(line) for line in fires.read_text().splitlines()]
    assert len(events) == 1
    event = events[0]
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["time"] == f"{due:%Y-%m-%dT%H:%M:%SZ}"
    assert event["detail"] == {}
    assert event["resources"][0].endswith("nightly-report")
    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }


def test_bad_cron_expression_is_refused_with_its_location(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(_config("cron(0 12 * * * *)"))
    result = subprocess.run(
        [*router_command(), "validate", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"{config}:10: mappings[0].source.schedule" in result.stderr, result.stderr
