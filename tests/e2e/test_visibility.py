"""What an operator sees when deliveries fail: WARNING lines naming the mapping, function and
error (rate-limited per mapping, with a count of what was left out), the last problem in
``mappings list`` until a success, and counters that tell deliveries from attempts."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from router import logs
from router.ops import start_listener
from router.pipeline import delivery
from router.store import SQLStore
from tests.fixtures.procs import free_port
from tests.helpers import eventually, router_command, run_router

HANDLERS = """
SEEN = set()

def key(event):
    return event["Records"][0]["s3"]["object"]["key"]

def fail_bad(event, context):
    if key(event).startswith("bad"):
        raise ValueError(f"cannot parse {key(event)}")
    return {"ok": True}

def flaky(event, context):
    # Fails the first attempt of every file, succeeds the second.
    if key(event) not in SEEN:
        SEEN.add(key(event))
        raise RuntimeError("first attempt fails")
    return {"ok": True}
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "vis_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vis_handlers", raising=False)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "other").mkdir()
    return tmp_path


def _python(handler: str) -> str:
    return f"""
  fn:
    invoker: python
    handler: vis_handlers:{handler}"""


def _config(folder: Path, function: str, extra: str = "") -> str:
    return f"""
functions:{function}
mappings:
  - name: inbox
    function: fn
    maximum_retry_attempts: 0
    source:
      type: directory
      path: {folder / "inbox"}
      settle: 0
{extra}"""


def _warnings(caplog: pytest.LogCaptureFixture, cause: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "cause", None) == cause
    ]


def _mappings_list(store: SQLStore) -> str:
    done = subprocess.run(
        [*router_command(), "mappings", "list", "--store", store.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


async def test_handler_error_is_logged_and_shown_until_the_next_success(
    sqlite_store: SQLStore, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with run_router(_config(folder, _python("fail_bad")), sqlite_store):
        (folder / "inbox" / "bad-1.txt").write_text("x")
        found = await eventually(
            lambda: _warnings(caplog, "function_error"), what="a WARNING for the handler error"
        )
        line = found[0]
        assert line.name.startswith("router.")
        assert (line.mapping, line.function) == ("inbox", "fn")
        assert line.errorType == "ValueError"
        assert line.errorMessage == "cannot parse bad-1.txt"
        text = line.getMessage()
        for part in ("inbox", "fn", "ValueError", "cannot parse bad-1.txt"):
            assert part in text

        async def last_result() -> str:
            row = await sqlite_store.get_mapping_by_name("inbox")
            assert row is not None
            return row.last_processing_result

        problem = "PROBLEM: function error: ValueError: cannot parse bad-1.txt"
        await eventually(lambda: _equals(last_result(), problem), what="PROBLEM in the store")
        assert problem in _mappings_list(sqlite_store)
        (folder / "inbox" / "good.txt").write_text("x")
        await eventually(lambda: _equals(last_result(), "OK"), what="OK after a success")
        assert "  OK" in _mappings_list(sqlite_store)


async def _equals(value: object, expected: str) -> bool:
    return bool(await value == expected)  # type: ignore[misc]


async def test_records_invoked_counts_deliveries_and_attempts_apart(
    sqlite_store: SQLStore, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each file fails once and succeeds at the retry: 3 records delivered, 6 attempts. The
    failed first attempts are logged though the status is OK again within one flush."""
    from router.ops import render_metrics

    caplog.set_level(logging.WARNING)
    config = _config(folder, _python("flaky")).replace(
        "maximum_retry_attempts: 0", "maximum_retry_attempts: 2"
    )
    async with run_router(config, sqlite_store) as router:
        for i in range(3):
            (folder / "inbox" / f"f{i}.txt").write_text("x")
        _, counters = next(iter(router.counters().values()))
        await eventually(lambda: counters.invoked == 3, what="three deliveries")
        assert counters.attempts == 6
        metrics = render_metrics(router)
        assert 'router_records_invoked_total{mapping="inbox"} 3' in metrics
        assert 'router_record_attempts_total{mapping="inbox"} 6' in metrics
        assert 'router_invocations_total{mapping="inbox"} 6' in metrics
        assert 'router_records_failed_total{mapping="inbox"} 3' in metrics
    row = await sqlite_store.get_mapping_by_name("inbox")
    assert row is not None
    assert row.last_processing_result == "OK"
    stats = await sqlite_store.get_stats(row.uuid)
    assert stats["invoked"] == 3, "the store counts deliveries, as the metric does"
    errors = _warnings(caplog, "function_error")
    assert len(errors) == 3
    assert {getattr(r, "errorMessage", None) for r in errors} == {"first attempt fails"}


async def test_warnings_are_rate_limited_per_mapping_with_a_suppressed_count(
    sqlite_store: SQLStore,
    folder: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    limited = logs.LimitedLogger(delivery.logger, lines=3, interval=600, clock=clock)
    monkeypatch.setattr(delivery, "warnings", limited)
    caplog.set_level(logging.WARNING)
    other = f"""
  - name: other
    function: fn
    maximum_retry_attempts: 0
    source:
      type: directory
      path: {folder / "other"}
      settle: 0
"""
    async with run_router(_config(folder, _python("fail_bad"), other), sqlite_store) as router:
        for i in range(12):
            (folder / "inbox" / f"bad-{i:02}.txt").write_text("x")
        inbox = next(c for n, c in router.counters().values() if n == "inbox")
        await eventually(lambda: inbox.failed == 12, what="twelve failures")
        (folder / "other" / "bad-other.txt").write_text("x")
        await eventually(
            lambda: any(
                getattr(r, "mapping", None) == "other" for r in _warnings(caplog, "function_error")
            ),
            what="the other mapping's warning",
        )
        lines = [
            r for r in _warnings(caplog, "function_error") if getattr(r, "mapping", None) == "inbox"
        ]
        assert len(lines) == 3, [r.getMessage() for r in lines]
        clock.now += 600
        # The router writes due summaries every second.
        summary = await eventually(
            lambda: [r for r in lines_of(caplog, "inbox") if getattr(r, "suppressed", 0)],
            what="the summary line",
        )
    assert summary[0].suppressed == 9
    assert summary[0].getMessage().startswith("9 similar lines suppressed in the last 600s")
    assert "errorType=ValueError" in summary[0].getMessage()


def lines_of(caplog: pytest.LogCaptureFixture, mapping: str) -> list[logging.LogRecord]:
    return [r for r in _warnings(caplog, "function_error") if getattr(r, "mapping", "") == mapping]


async def test_an_invoker_that_is_down_is_logged(
    sqlite_store: SQLStore, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    function = f"""
  fn:
    invoker: http
    url: http://127.0.0.1:{free_port()}
    connect_timeout: 2"""
    async with run_router(_config(folder, function), sqlite_store):
        (folder / "inbox" / "a.txt").write_text("x")
        found = await eventually(
            lambda: _warnings(caplog, "transport_error"), what="a WARNING: invoker unreachable"
        )
    text = found[0].getMessage()
    assert found[0].mapping == "inbox"
    assert "mapping inbox: function fn unreachable" in text
    assert "Connect" in text, text


async def test_an_http_invoker_that_can_never_send_is_logged(
    sqlite_store: SQLStore, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Credentials in the URL and an Authorization header: aiohttp refuses every call.
    ``router validate`` and ``router run`` refuse this configuration before it runs; a
    Router given it anyway says why every call fails instead of retrying in silence."""
    caplog.set_level(logging.WARNING)
    function = f"""
  fn:
    invoker: http
    url: http://user:hunter2@127.0.0.1:{free_port()}
    headers:
      Authorization: Bearer abc"""
    config = "router:\n  allow_plaintext_secrets: true\n" + _config(folder, function)
    async with run_router(config, sqlite_store):
        (folder / "inbox" / "a.txt").write_text("x")
        found = await eventually(
            lambda: _warnings(caplog, "transport_error"), what="a WARNING for the failing call"
        )
    text = found[0].getMessage()
    assert "mapping inbox: function fn unreachable" in text
    assert "Cannot combine AUTHORIZATION header" in text, text
    assert "hunter2" not in caplog.text


async def _get(base: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(base + path) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_readyz_names_an_enabled_mapping_that_does_not_run(
    sqlite_store: SQLStore, folder: Path
) -> None:
    async with run_router(_config(folder, _python("fail_bad")), sqlite_store) as router:
        runner = await start_listener(router, "127.0.0.1:0")
        try:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            assert (await _get(base, "/readyz"))[0] == 200
            row = await sqlite_store.get_mapping_by_name("inbox")
            assert row is not None
            row.maximum_retry_attempts = 7  # directory sources allow 0..2: cannot start
            await sqlite_store.update_mapping(row)
            await eventually(lambda: not router.running, what="the mapping stopped")
            status, body = await _get(base, "/readyz")
            assert status == 503
            assert body == {"status": "not ready", "not_running": ["inbox"]}
            assert (await _get(base, "/healthz"))[0] == 200, "liveness is not readiness"
            _, metrics = await _get(base, "/metrics")
            assert 'router_mapping_state{mapping="inbox",state="not_running"} 1' in metrics
            assert 'router_mapping_state{mapping="inbox",state="ok"} 0' in metrics
        finally:
            await runner.cleanup()


async def test_readyz_names_a_mapping_failing_longer_than_the_grace(
    sqlite_store: SQLStore, folder: Path
) -> None:
    config = "router:\n  readiness_failure_grace: 0\n" + _config(folder, _python("fail_bad"))
    async with run_router(config, sqlite_store) as router:
        runner = await start_listener(router, "127.0.0.1:0")
        try:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}"
            assert (await _get(base, "/readyz"))[0] == 200
            (folder / "inbox" / "bad-1.txt").write_text("x")

            async def unready() -> Any:
                status, body = await _get(base, "/readyz")
                return body if status == 503 else None

            body = await eventually(unready, what="/readyz 503")
            assert body["status"] == "not ready"
            [failing] = body["failing"]
            assert failing["name"] == "inbox"
            assert failing["last_result"].startswith("PROBLEM: function error: ValueError")
            _, metrics = await _get(base, "/metrics")
            assert 'router_mapping_state{mapping="inbox",state="problem"} 1' in metrics
            (folder / "inbox" / "good.txt").write_text("x")

            async def ready() -> bool:
                return (await _get(base, "/readyz"))[0] == 200

            await eventually(ready, what="ready again after a success")
            _, metrics = await _get(base, "/metrics")
            assert 'router_mapping_state{mapping="inbox",state="ok"} 1' in metrics
            assert 'router_mapping_failing_seconds{mapping="inbox"} 0.0' in metrics
        finally:
            await runner.cleanup()
