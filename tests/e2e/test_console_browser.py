"""The web console in a real browser: headless Chromium (the distribution's package) driven
by Playwright against a running ``router run``, clicking through every page: the mappings,
a mapping's failures with enable / disable and replay, the asynchronous queue, the
schedules. The read-only console is checked over plain HTTP."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from router.models import QueuedEvent
from router.ops import start_listener
from router.store import SQLStore
from tests.helpers import eventually, run_router, start_router_process, terminate

CHROMIUM = os.environ.get("ROUTER_TEST_CHROMIUM", "/usr/bin/chromium")

HANDLERS = """\
import os

def ok(event, context):
    return {"ok": True}

def flaky(event, context):
    if os.path.exists(os.environ["BROKEN_FLAG"]):
        raise ValueError("the orders service is broken")
    return {"ok": True}
"""

CONFIG = """\
router:
  console:
    allow_changes: {allow}
functions:
  ok:
    invoker: python
    handler: handlers:ok
  flaky:
    invoker: python
    handler: handlers:flaky
mappings:
  - name: inbox
    function: ok
    source: {{type: directory, path: {root}/inbox}}
  - name: orders
    function: flaky
    maximum_retry_attempts: 0
    source: {{type: directory, path: {root}/orders}}
    destination_config:
      on_failure:
        destination: table
  - name: tick
    function: ok
    source: {{type: schedule, schedule: "rate(5 minutes)"}}
"""


def _layout(root: Path, *, allow: bool) -> Path:
    for folder in ("inbox", "orders"):
        (root / folder).mkdir()
    (root / "handlers.py").write_text(HANDLERS)
    config = root / "router.yaml"
    config.write_text(CONFIG.format(root=root, allow="true" if allow else "false"))
    return config


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (scripts/test does)")
    pytest.importorskip("playwright", reason="pip install playwright (in the dev extra)")
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[str, SQLStore, Path]]:
    """``router run`` on a SQLite store in ``tmp_path``; yields (console URL, the store,
    the broken flag's path)."""
    config = _layout(tmp_path, allow=True)
    flag = tmp_path / "broken"
    flag.write_text("yes")
    url = f"sqlite+aiosqlite:///{tmp_path / 'router.db'}"
    log = tmp_path / "router.log"
    proc = start_router_process(
        config, url, tmp_path, log, env={"BROKEN_FLAG": str(flag), "ROUTER_LOG_LEVEL": "INFO"}
    )
    try:

        def port() -> str | None:
            found = re.search(r"operations listener on http://[\d.]+:(\d+)", log.read_text())
            if proc.poll() is not None:
                raise AssertionError(f"router exited: {log.read_text()}")
            return found.group(1) if found else None

        found = await eventually(port, timeout=60, what="the operations listener in the log")
        base = f"http://127.0.0.1:{found}"

        async def ready() -> bool:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as r:
                return r.status == 200

        await eventually(ready, timeout=60, what="/readyz")
        store = SQLStore(url)
        await store.start()
        try:
            yield base, store, flag
        finally:
            await store.aclose()
    finally:
        code = terminate(proc)
        assert code == 0, log.read_text()


async def test_console_pages_in_chromium(
    chromium: str, running: tuple[str, SQLStore, Path]
) -> None:
    from playwright.async_api import async_playwright, expect

    base, store, flag = running
    root = flag.parent
    (root / "inbox" / "a.txt").write_text("a")
    (root / "orders" / "bad.txt").write_text("bad")
    await eventually(store.list_failed_events, timeout=60, what="the failed event kept")
    queued = QueuedEvent(
        id="console-test-event",
        target="function:nobody",
        payload='{"waiting": true}',
        enqueued_at=datetime.now(UTC),
    )
    await store.enqueue_events([queued])

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-background-networking"]
        )
        try:
            page = await browser.new_page()
            outside: list[str] = []
            page.on(
                "request",
                lambda r: None if r.url.startswith(base) else outside.append(r.url),
            )
            await page.goto(f"{base}/console")
            await expect(page.locator("h1")).to_have_text("Mappings")
            rows = page.locator("tbody tr")
            await expect(rows).to_have_count(3)
            inbox = rows.filter(has_text="inbox")
            await expect(inbox).to_contain_text("running")
            await expect(inbox.locator("svg.spark")).to_have_count(1)

            async def counted() -> bool:
                await page.reload()
                cells = await inbox.locator("td.num").all_inner_texts()
                return cells[0] == "1" and cells[1] == "1"  # records in, invoked

            await eventually(counted, timeout=30, interval=0.5, what="inbox's totals")

            await page.get_by_role("link", name="orders").click()
            await expect(page.locator("h1")).to_have_text("Mapping orders")
            await expect(page.locator("h2")).to_contain_text("1 not replayed")
            await expect(page.locator("pre")).to_contain_text("bad.txt")
            await expect(page.locator("pre")).to_contain_text("the orders service is broken")

            await page.get_by_role("button", name="Disable").click()
            await expect(page.get_by_role("status")).to_have_text("orders disabled")
            await expect(page.locator("table").first).to_contain_text("disabled")
            row = await store.get_mapping_by_name("orders")
            assert row is not None and not row.enabled
            await page.get_by_role("button", name="Enable").click()
            await expect(page.get_by_role("status")).to_have_text("orders enabled")
            row = await store.get_mapping_by_name("orders")
            assert row is not None and row.enabled

            flag.unlink()  # the function works again: the replay succeeds
            await page.get_by_role("button", name="Replay", exact=True).click()
            await expect(page.get_by_role("status")).to_have_text("1 replayed")
            await expect(page.locator("h2")).to_contain_text("0 not replayed")
            assert await store.list_failed_events() == []

            await page.get_by_role("link", name="Async queue").click()
            await expect(page.locator("h1")).to_have_text("Async queue")
            await expect(page.locator("body")).to_contain_text("console-test-event")
            await expect(page.locator("body")).to_contain_text("function:nobody")

            await page.get_by_role("link", name="Schedules").click()
            await expect(page.locator("h1")).to_have_text("Schedules")
            tick = page.locator("tbody tr").filter(has_text="tick")
            await expect(tick).to_contain_text("rate(5 minutes)")
            fires = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", await tick.inner_text())
            assert len(fires) == 5, await tick.inner_text()

            await page.get_by_role("link", name="Mappings").click()
            await expect(page.locator("h1")).to_have_text("Mappings")
            await page.screenshot(path=str(root / "console.png"), full_page=True)
            assert outside == []
        finally:
            await browser.close()


async def test_read_only_console_refuses_changes(sqlite_store: SQLStore, tmp_path: Path) -> None:
    config = _layout(tmp_path, allow=False)
    text = config.read_text().replace("handlers:", "router.examples.hello:handler #")
    async with run_router(text, sqlite_store) as router:
        runner = await start_listener(router, "127.0.0.1:0")
        try:
            base = f"http://127.0.0.1:{runner.addresses[0][1]}/console"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/mappings/orders") as r:
                    page = await r.text()
                assert r.status == 200
                assert "<form" not in page
                assert "allow_changes" in page
                for action in ("enabled", "replay"):
                    async with http.post(
                        f"{base}/mappings/orders/{action}", data={"enabled": "false"}
                    ) as r:
                        refused = await r.text()
                    assert r.status == 403
                    assert "router.console.allow_changes: true" in refused
                async with http.get(f"{base}/mappings/nosuch") as r:
                    assert r.status == 404
                    assert "no mapping named 'nosuch'" in await r.text()
        finally:
            await runner.cleanup()
    row = await sqlite_store.get_mapping_by_name("orders")
    assert row is not None and row.enabled
