"""Changing the YAML under a running router: an emptied file is refused and changes nothing;
a mapping the YAML no longer declares is deleted with a WARNING."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import start_router_process, terminate

CONFIG = """\
functions:
  echo:
    invoker: python
    handler: bar_handler:handle
mappings:
  - name: inbox
    function: echo
    source:
      type: directory
      path: ./inbox
"""

HANDLER = """\
import json

def handle(event, context):
    with open("events.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
"""


def _keys(cwd: Path) -> list[str]:
    path = cwd / "events.jsonl"
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e["Records"][0]["s3"]["object"]["key"] for e in events]


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _log(cwd: Path) -> str:
    log = cwd / "router.log"
    return log.read_text(errors="replace") if log.exists() else ""


def _mappings(cwd: Path) -> dict[str, str]:
    conn = sqlite3.connect(cwd / "router.db")
    try:
        return dict(conn.execute("SELECT name, uuid FROM event_source_mappings").fetchall())
    finally:
        conn.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "router.yaml").write_text(CONFIG)
    (tmp_path / "bar_handler.py").write_text(HANDLER)
    (tmp_path / "inbox").mkdir()
    return tmp_path


def test_an_emptied_file_changes_nothing_and_restoring_it_delivers_nothing_twice(
    workdir: Path,
) -> None:
    config = workdir / "router.yaml"
    proc = start_router_process(
        config, f"sqlite:///{workdir / 'router.db'}", workdir, workdir / "router.log"
    )
    try:
        _wait(lambda: "running" in _log(workdir) or proc.poll() is not None, 30, "start")
        assert proc.poll() is None, _log(workdir)
        before = _mappings(workdir)
        (workdir / "inbox" / "a.txt").write_text("a")
        _wait(lambda: _keys(workdir) == ["a.txt"], 10, "a.txt delivered")

        config.write_text("# emptied by mistake\n")
        _wait(lambda: "configuration rejected" in _log(workdir), 10, "the rejection")
        assert "the file is empty" in _log(workdir)
        assert _mappings(workdir) == before
        (workdir / "inbox" / "b.txt").write_text("b")
        _wait(lambda: _keys(workdir) == ["a.txt", "b.txt"], 10, "b.txt delivered meanwhile")

        # Restored with one change, so that the log shows when it was applied.
        config.write_text(CONFIG + "    maximum_retry_attempts: 1\n")
        _wait(lambda: "~ update inbox" in _log(workdir), 10, "the restored file applied")
        (workdir / "inbox" / "c.txt").write_text("c")
        _wait(lambda: "c.txt" in _keys(workdir), 10, "c.txt delivered")
        assert _mappings(workdir) == before
    finally:
        assert terminate(proc) == 0, _log(workdir)
    assert _keys(workdir) == ["a.txt", "b.txt", "c.txt"]


def test_a_mapping_removed_from_the_yaml_and_declared_again_resumes(workdir: Path) -> None:
    config = workdir / "router.yaml"
    proc = start_router_process(
        config, f"sqlite:///{workdir / 'router.db'}", workdir, workdir / "router.log"
    )
    try:
        _wait(lambda: "running" in _log(workdir) or proc.poll() is not None, 30, "start")
        assert proc.poll() is None, _log(workdir)
        before = _mappings(workdir)
        (workdir / "inbox" / "a.txt").write_text("a")
        _wait(lambda: _keys(workdir) == ["a.txt"], 10, "a.txt delivered")

        config.write_text(CONFIG.split("mappings:")[0] + "mappings: []\n")
        _wait(lambda: _mappings(workdir) == {}, 10, "the mapping deleted")
        _wait(lambda: "mapping inbox stopped" in _log(workdir), 10, "the mapping stopped")

        config.write_text(CONFIG)
        _wait(lambda: _mappings(workdir) == before, 10, "the mapping back, with its uuid")
        (workdir / "inbox" / "b.txt").write_text("b")
        _wait(lambda: "b.txt" in _keys(workdir), 10, "b.txt delivered")
    finally:
        assert terminate(proc) == 0, _log(workdir)
    # a.txt, processed before the mapping was deleted, is not delivered again.
    assert _keys(workdir) == ["a.txt", "b.txt"]
    (line,) = [x for x in _log(workdir).splitlines() if "deleted mapping inbox" in x]
    assert "WARNING" in line and "no longer in the YAML" in line
    assert "its checkpoints are kept for 7 days" in line


SCHEDULED = """\
functions:
  hello: {invoker: python, handler: router.examples.hello:handler}
mappings:
  - name: NAME
    function: hello
    source: {type: schedule, schedule: rate(1 hour)}
"""


async def test_an_edit_made_while_the_router_starts_is_applied(tmp_path: Path) -> None:
    import asyncio

    from router.config import load_config
    from router.service import Service
    from router.watcher import fingerprint

    path = tmp_path / "router.yaml"
    path.write_text(SCHEDULED.replace("NAME", "first"))
    loaded = fingerprint(str(path))  # as `router run` does, before reading the files
    config = load_config(str(path))
    path.write_text(SCHEDULED.replace("NAME", "second"))  # while the router starts
    url = f"sqlite:///{tmp_path / 'router.db'}"
    async with Service(
        config, store_url=url, http_listen="off", watch=str(path), watch_loaded=loaded
    ) as service:
        for _ in range(200):
            names = {m.name for m in await service.store.list_mappings()}
            if names == {"second"}:
                break
            await asyncio.sleep(0.05)
    assert names == {"second"}
