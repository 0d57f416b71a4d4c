"""The web console at ``/console`` on the operations listener: server-rendered pages of the
mappings (state, last result, lag, a throughput sparkline), one mapping's recent failures
with their payloads, the asynchronous queue and the schedules' next fires. With
``router.console.allow_changes`` it also enables / disables mappings and replays failed
events; otherwise every change is refused (403). What each page shows is in docs/console.md."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import web

from router.app import Router
from router.console import html
from router.lag import lag_of
from router.models import MappingRow
from router.replay import Replay, replay

SAMPLE_INTERVAL = 10.0
"""Seconds between two samples of the throughput sparkline."""
SAMPLES = 60
"""Samples kept per mapping (10 minutes at the default interval)."""
FAILURES_SHOWN = 50
"""Failed events shown on a mapping's page, newest first."""
NEXT_FIRES = 5
"""Next fires shown per schedule."""
QUEUE_SHOWN = 100
"""Queued events listed on the queue page, oldest first."""


@runtime_checkable
class Scheduled(Protocol):
    """A source that knows its next fires (the ``schedule`` source)."""

    def next_after(self, cursor: datetime) -> datetime | None: ...


class Throughput:
    """Records read per mapping (``records_in``) sampled every :data:`SAMPLE_INTERVAL`."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.totals: dict[str, deque[int]] = {}

    def sample(self) -> None:
        for uid, (_, counters) in self.router.counters().items():
            self.totals.setdefault(uid, deque(maxlen=SAMPLES + 1)).append(counters.records_in)
        for uid in set(self.totals) - set(self.router.running):
            del self.totals[uid]

    def series(self, uid: str) -> list[float]:
        """Records per interval, oldest first, the one in progress last."""
        running = self.router.running.get(uid)
        if running is None:
            return []
        now = running.pipeline.counters.records_in
        # A mapping started since the last sample starts its series now.
        totals = [*self.totals.setdefault(uid, deque([now], maxlen=SAMPLES + 1)), now]
        return [float(b - a) for a, b in itertools.pairwise(totals)]

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)


class Console:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.throughput = Throughput(router)

    @property
    def allow_changes(self) -> bool:
        return self.router.config.settings.console.allow_changes

    # ------------------------------------------------------------------ pages

    async def mappings(self, request: web.Request) -> web.Response:
        rows = sorted(await self.router.store.list_mappings(), key=lambda r: r.name)
        cells = []
        for row in rows:
            stats = await self.router.store.get_stats(row.uuid)
            cells.append(
                [
                    html.link(f"/console/mappings/{quote(row.name)}", row.name),
                    html.text(row.source_type),
                    html.text(row.function_name),
                    self._state(row),
                    self._result(row.last_processing_result),
                    html.text(self._lag(row.uuid)),
                    html.sparkline(self.throughput.series(row.uuid)),
                    html.num(stats.get("records_in", 0)),
                    html.num(stats.get("invoked", 0)),
                    html.num(stats.get("failed", 0)),
                ]
            )
        headers = ["mapping", "source", "function", "state", "last result", "lag"]
        headers += [f"records in (per {SAMPLE_INTERVAL:g} s)", "records in", "invoked", "failed"]
        body = html.table(headers, cells, empty="No mappings in the store.")
        body += '<p class="note">Totals are those the store keeps (written every second).</p>'
        return self._page("Mappings", body, request)

    async def mapping(self, request: web.Request) -> web.Response:
        row = await self._row(request)
        store = self.router.store
        events = await store.list_failed_events(mapping_uuid=row.uuid)
        details = [
            ["source", html.text(row.source_type)],
            ["function", html.text(row.function_name)],
            ["state", self._state(row)],
            ["last result", self._result(row.last_processing_result)],
            ["state transition reason", html.text(row.state_transition_reason)],
            ["lag", html.text(self._lag(row.uuid))],
            ["throughput", html.sparkline(self.throughput.series(row.uuid), width=300)],
            ["uuid", html.text(row.uuid)],
            ["origin", html.text(row.origin)],
        ]
        body = html.table(["", ""], details, empty="")
        base = f"/console/mappings/{quote(row.name)}"
        if self.allow_changes:
            verb = "Disable" if row.enabled else "Enable"
            body += "<p>" + html.button(f"{base}/enabled", verb, {"enabled": str(not row.enabled)})
            if events:
                body += " " + html.button(f"{base}/replay", f"Replay all {len(events)}")
            body += "</p>"
        else:
            body += (
                '<p class="note">Read-only: set router.console.allow_changes: true to enable, '
                "disable and replay from here.</p>"
            )
        body += f"<h2>Recent failures ({len(events)} not replayed)</h2>"
        shown = list(reversed(events))[:FAILURES_SHOWN]
        failures = []
        for event in shown:
            payload = orjson.dumps(event.payload, option=orjson.OPT_INDENT_2).decode()
            replay_cell = (
                html.button(f"{base}/replay", "Replay", {"id": str(event.id)})
                if self.allow_changes
                else ""
            )
            failures.append(
                [
                    html.num(event.id or 0),
                    html.when(event.created_at),
                    html.text(event.condition),
                    f"<pre>{html.text(payload)}</pre>",
                    replay_cell,
                ]
            )
        body += html.table(
            ["id", "when", "condition", "payload", ""],
            failures,
            empty="None kept. Failures are kept for replay by the table on-failure "
            "destination (destination_config.on_failure.destination: table).",
        )
        return self._page(f"Mapping {row.name}", body, request)

    async def queue(self, request: web.Request) -> web.Response:
        store = self.router.store
        names = {r.uuid: r.name for r in await store.list_mappings()}
        depths = await store.queue_depths()
        body = html.table(
            ["target", "events", "oldest"],
            (
                [self._target(d.target, names), html.num(d.events), html.when(d.oldest)]
                for d in depths
            ),
            empty="The asynchronous queue is empty.",
        )
        events = await store.list_events(limit=QUEUE_SHOWN)
        if events:
            body += f"<h2>Oldest events (up to {QUEUE_SHOWN})</h2>"
        body += html.table(
            ["id", "target", "accepted", "deliveries", "claimed by", "until", "payload"],
            (
                [
                    html.text(e.id),
                    self._target(e.target, names),
                    html.when(e.enqueued_at),
                    html.num(e.deliveries),
                    html.text(e.lease_owner or ""),
                    html.when(e.lease_expires_at),
                    f"<pre>{html.text(e.payload)}</pre>",
                ]
                for e in events
            ),
            empty="",
        )
        return self._page("Async queue", body, request)

    async def schedules(self, request: web.Request) -> web.Response:
        rows = [r for r in await self.router.store.list_mappings() if r.source_type == "schedule"]
        now = datetime.now(UTC)
        cells = []
        for row in sorted(rows, key=lambda r: r.name):
            running = self.router.running.get(row.uuid)
            source = None if running is None else running.pipeline.source
            if isinstance(source, Scheduled):
                fires, cursor = [], now
                while len(fires) < NEXT_FIRES and (t := source.next_after(cursor)) is not None:
                    fires.append(t)
                    cursor = t
                nexts = "<br>".join(html.when(t) for t in fires) or "no further fires"
            else:
                nexts = '<span class="off">not running on this replica</span>'
            config = row.source_config
            cells.append(
                [
                    html.link(f"/console/mappings/{quote(row.name)}", row.name),
                    html.text(config.get("schedule", config.get("ScheduleExpression", ""))),
                    html.text(
                        config.get("timezone", config.get("ScheduleExpressionTimezone", "UTC"))
                    ),
                    self._state(row),
                    html.text(self._lag(row.uuid)),
                    nexts,
                ]
            )
        body = html.table(
            ["mapping", "expression", "timezone", "state", "last fire delay", "next fires (UTC)"],
            cells,
            empty="No schedule mappings in the store.",
        )
        return self._page("Schedules", body, request)

    # ------------------------------------------------------------------ changes

    async def set_enabled(self, request: web.Request) -> web.Response:
        self._check_change(request)
        row = await self._row(request)
        form = await request.post()
        enabled = str(form.get("enabled", "")).lower() == "true"
        await self.router.store.set_enabled(row.uuid, enabled)
        done = f"{row.name} {'enabled' if enabled else 'disabled'}"
        raise web.HTTPSeeOther(f"/console/mappings/{quote(row.name)}?done={quote(done)}")

    async def replay(self, request: web.Request) -> web.Response:
        self._check_change(request)
        row = await self._row(request)
        form = await request.post()
        events = await self.router.store.list_failed_events(mapping_uuid=row.uuid)
        wanted = str(form.get("id", ""))
        if wanted:
            events = [e for e in events if str(e.id) == wanted]
        counts: dict[Replay, int] = {}
        async for done in replay(
            self.router.config, self.router.store, events, running=self.router.functions
        ):
            counts[done.what] = counts.get(done.what, 0) + 1
        summary = ", ".join(f"{n} {what}" for what, n in counts.items()) or "nothing to replay"
        raise web.HTTPSeeOther(f"/console/mappings/{quote(row.name)}?done={quote(summary)}")

    def _check_change(self, request: web.Request) -> None:
        if not self.allow_changes:
            raise web.HTTPForbidden(
                text="the console is read-only: set router.console.allow_changes: true in the "
                "router: block to enable, disable and replay from it\n"
            )
        origin = request.headers.get("Origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(
                text=f"a change from another site ({origin}) is refused: use the console's "
                "own buttons\n"
            )

    # ------------------------------------------------------------------ pieces

    async def _row(self, request: web.Request) -> MappingRow:
        name = request.match_info["name"]
        row = await self.router.store.get_mapping_by_name(name)
        if row is None:
            raise web.HTTPNotFound(
                text=f"no mapping named {name!r} in the store; /console lists them\n"
            )
        return row

    def _page(self, title: str, body: str, request: web.Request) -> web.Response:
        document = html.page(title, body, flash=request.query.get("done", ""))
        return web.Response(text=document, content_type="text/html")

    def _state(self, row: MappingRow) -> str:
        if not row.enabled:
            return '<span class="off">disabled</span>'
        if row.uuid not in self.router.running:
            return f'<span class="off">{html.text(row.state)}, not running here</span>'
        if self.router.failing_for(row.uuid) is not None:
            return '<span class="problem">running, failing</span>'
        return '<span class="ok">running</span>'

    @staticmethod
    def _result(result: str) -> str:
        css = "problem" if result.startswith("PROBLEM") else ""
        return f'<span class="{css}">{html.text(result)}</span>'

    def _lag(self, uid: str) -> str:
        running = self.router.running.get(uid)
        if running is None:
            return ""
        lag = lag_of(running.pipeline.source.metrics())
        return "" if lag is None else str(lag)

    @staticmethod
    def _target(target: str, names: dict[str, str]) -> str:
        kind, _, key = target.partition(":")
        if kind == "mapping" and key in names:
            return "mapping " + html.link(f"/console/mappings/{quote(names[key])}", names[key])
        return html.text(target)


def add_console(app: web.Application, router: Router) -> None:
    """The console's routes on ``app``, and its throughput sampler for the app's lifetime."""
    console = Console(router)
    app.router.add_get("/console", console.mappings)
    app.router.add_get("/console/", console.mappings)
    app.router.add_get("/console/mappings/{name}", console.mapping)
    app.router.add_post("/console/mappings/{name}/enabled", console.set_enabled)
    app.router.add_post("/console/mappings/{name}/replay", console.replay)
    app.router.add_get("/console/queue", console.queue)
    app.router.add_get("/console/schedules", console.schedules)

    async def sampler(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(console.throughput.run(), name="console throughput")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sampler)


__all__ = ["SAMPLE_INTERVAL", "Console", "Throughput", "add_console"]
