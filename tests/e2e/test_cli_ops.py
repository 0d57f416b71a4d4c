"""The operations side: /healthz, /readyz, /metrics; `router apply --dry-run`, `mappings`
commands, secrets kept out of their output, and the schema refusal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import aiohttp
import pytest

from router.ops import start_listener
from router.store import SQLStore
from tests.helpers import eventually, router_command, run_router

CONFIG = """\
router:
  allow_plaintext_secrets: true   # the destination's password is written in place
functions:
  fn:
    invoker: python
    handler: router.examples.hello:handler
mappings:
  - name: inbox
    function: fn
    source:
      type: directory
      path: {inbox}
    destination_config:
      on_failure:
        destination: http://user:hunter2@127.0.0.1:9/failures
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*router_command(), *args], capture_output=True, text=True, cwd=cwd)


async def test_health_ready_and_metrics(sqlite_store: SQLStore, tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    async with run_router(CONFIG.format(inbox=tmp_path / "inbox"), sqlite_store) as router:
        runner = await start_listener(router, "127.0.0.1:0")
        try:
            port = runner.addresses[0][1]
            base = f"http://127.0.0.1:{port}"
            (tmp_path / "inbox" / "one.txt").write_text("1")
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200
                async with http.get(f"{base}/readyz") as r:
                    assert r.status == 200

                async def invoked() -> bool:
                    async with http.get(f"{base}/metrics") as r:
                        text = await r.text()
                    return 'router_records_invoked_total{mapping="inbox"} 1' in text

                await eventually(invoked, what="invoked counter in /metrics")
                async with http.get(f"{base}/metrics") as r:
                    text = await r.text()
            assert 'router_invoke_duration_seconds_count{mapping="inbox"} 1' in text
            assert 'router_records_in_total{mapping="inbox"} 1' in text
        finally:
            await runner.cleanup()
    stats = await sqlite_store.get_stats((await sqlite_store.list_mappings())[0].uuid)
    assert stats["invoked"] == 1


def test_apply_dry_run_mappings_commands_and_redaction(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(inbox=tmp_path / "inbox"))
    store = f"sqlite:///{tmp_path / 'router.db'}"
    common = ["--config", str(config), "--store", store]

    dry = _cli("apply", "--dry-run", *common, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "inbox" in dry.stdout
    assert "hunter2" not in dry.stdout + dry.stderr
    listed = _cli("mappings", "list", *common, cwd=tmp_path)
    assert "inbox" not in listed.stdout  # a dry run writes nothing

    applied = _cli("apply", *common, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    again = _cli("apply", "--dry-run", *common, cwd=tmp_path)
    assert "no changes" in again.stdout

    listed = _cli("mappings", "list", *common, cwd=tmp_path)
    assert "inbox" in listed.stdout
    shown = _cli("mappings", "show", "inbox", "--output", "json", *common, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert '"name": "inbox"' in shown.stdout
    assert "hunter2" not in shown.stdout + shown.stderr

    disabled = _cli("mappings", "disable", "inbox", *common, cwd=tmp_path)
    assert disabled.returncode == 0
    shown = _cli("mappings", "show", "inbox", "--output", "json", *common, cwd=tmp_path)
    assert '"enabled": false' in shown.stdout

    missing = _cli("mappings", "show", "nope", *common, cwd=tmp_path)
    assert missing.returncode == 2
    assert "no mapping named 'nope'" in missing.stderr


@pytest.mark.postgres
def test_run_refuses_an_outdated_schema(empty_pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(inbox=tmp_path / "inbox"))
    result = _cli("run", "--config", str(config), "--store", empty_pg_url, cwd=tmp_path)
    assert result.returncode == 1
    assert "router db upgrade" in result.stderr
    upgraded = _cli("db", "upgrade", "--store", empty_pg_url, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr


def test_schema_and_test_pattern_through_the_router_command(tmp_path: Path) -> None:
    import json

    schema = _cli("schema", cwd=tmp_path)
    assert schema.returncode == 0, schema.stderr
    document = json.loads(schema.stdout)
    assert "mappings" in json.dumps(document)

    event = '{"body": {"status": "paid", "total": 120}}'
    match = _cli(
        "test-pattern",
        "--pattern",
        '{"body": {"status": ["paid"]}}',
        "--event",
        event,
        cwd=tmp_path,
    )
    assert match.returncode == 0, match.stderr
    miss = _cli(
        "test-pattern",
        "--pattern",
        '{"body": {"status": ["void"]}}',
        "--event",
        event,
        cwd=tmp_path,
    )
    assert miss.returncode == 1
    bad = _cli(
        "test-pattern", "--pattern", '{"body": {"status": "paid"}}', "--event", event, cwd=tmp_path
    )
    assert bad.returncode == 2
    assert "status" in bad.stderr
