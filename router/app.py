"""The running router: invokers, one pipeline per enabled mapping, reconciliation with the
store, stats, and the operations listener.

The store is the truth at run time. YAML is applied into it (``router apply`` or the config
watcher); operators change it with SQL. The router follows: it reconciles its pipelines with
the ``event_source_mappings`` rows whenever the store reports a change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router import logs, registry
from router.abc import Destination, DestinationContext, SourceContext, Store
from router.aio import cancel_and_wait, close_logged, wait_event
from router.config import RouterConfig, mapping_from_row
from router.config.rows import CONFIG_COLUMNS
from router.errors import ConfigError, RouterError, StoreError
from router.functions import Functions
from router.ingress import Ingress
from router.lag import LagWriter
from router.models import (
    DestinationSpec,
    FunctionConfig,
    MappingConfig,
    MappingRow,
    MappingState,
    StatsDelta,
    StatusUpdate,
)
from router.pipeline import Backoff, Counters, Pipeline
from router.secrets import redact
from router.supervisor import Supervisor

logger = logging.getLogger(__name__)

STATS_INTERVAL = 1.0
FEED_BACKOFF = Backoff(base=0.5, cap=10.0)
"""Retries of the change feed and of stats writes while the store is down."""


def tune_gc() -> None:
    """Garbage-collector settings for a long-running router. The per-record path allocates
    many short-lived objects; the young generation is collected less often, and what was
    built at start (config, modules, connections) is kept out of every collection."""
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()


def open_destination(
    store: Store,
    config: MappingConfig,
    spec: DestinationSpec | None,
    opened: list[Destination],
    *,
    name: str = "",
) -> Destination | None:
    """The destination ``spec`` names for the mapping ``config`` (None for none), added to
    ``opened`` (close each when the mapping stops). ``name`` is the name the destination
    knows the mapping by (default: the mapping's)."""
    if spec is None:
        return None
    cls = registry.load_destination(spec.type)
    destination: Destination = cls(
        spec.settings,
        DestinationContext(
            store=store,
            mapping_uuid=config.uuid,
            mapping_name=name or config.name,
            function_name=config.function,
        ),
    )
    opened.append(destination)
    return destination


def default_backoff() -> Backoff:
    """Retry backoff for function errors; ROUTER_RETRY_BASE_DELAY / ROUTER_RETRY_MAX_DELAY
    (seconds) tune it."""
    values = []
    for name, default in (("ROUTER_RETRY_BASE_DELAY", "1.0"), ("ROUTER_RETRY_MAX_DELAY", "60.0")):
        text = os.environ.get(name, default)
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise ConfigError(f"${name}={text!r}: expected a positive number of seconds")
        values.append(value)
    return Backoff(base=values[0], cap=values[1])


def default_replica_id() -> str:
    """``$ROUTER_REPLICA_ID`` or the host name. Stable across restarts on purpose: a router
    that restarts takes its own leases (directory, bucket polling, schedules) back at once
    instead of waiting for them to expire. Replicas must have distinct ids (containers have
    distinct host names; set ROUTER_REPLICA_ID when running several on one host)."""
    return os.environ.get("ROUTER_REPLICA_ID") or socket.gethostname()


@dataclass(slots=True)
class _Running:
    config: MappingConfig
    pipeline: Pipeline
    destinations: list[Destination]
    flushed: Counters = field(default_factory=Counters)


def _delta(running: _Running) -> StatsDelta:
    """The counters of ``running`` not written yet."""
    now, before = running.pipeline.counters, running.flushed
    return StatsDelta(
        records_in=now.records_in - before.records_in,
        filtered=now.filtered - before.filtered,
        invoked=now.invoked - before.invoked,
        failed=now.failed - before.failed,
        last_invoke=now.last_invoke,
    )


def _flushed(running: _Running, delta: StatsDelta) -> None:
    before = running.flushed
    running.flushed = Counters(
        records_in=before.records_in + delta.records_in,
        filtered=before.filtered + delta.filtered,
        invoked=before.invoked + delta.invoked,
        failed=before.failed + delta.failed,
    )


class Router:
    """Runs the pipelines of the enabled mappings, on the functions' invokers. ``start``
    returns once everything runs; ``stop`` drains (up to ``shutdown_timeout``) and is
    idempotent."""

    def __init__(
        self,
        config: RouterConfig,
        store: Store,
        *,
        functions: Functions | None = None,
        replica_id: str | None = None,
        backoff: Backoff | None = None,
        shutdown_timeout: float | None = None,
        ingress: Ingress | None = None,
    ) -> None:
        self.config = config.running()
        self.store = store
        self.ingress = ingress
        """Handed to every source (pushed sources register with its listener)."""
        self._owns_functions = functions is None
        self.functions = Functions(config.functions, store) if functions is None else functions
        """The invokers; started and closed by the router itself unless it was given them."""
        self.functions.on_init_error = self._init_error
        self.replica_id = replica_id or default_replica_id()
        self.backoff = backoff or default_backoff()
        self.shutdown_timeout = (
            config.settings.shutdown_timeout if shutdown_timeout is None else shutdown_timeout
        )
        self.running: dict[str, _Running] = {}
        self.problems: dict[str, str] = {}
        self.retired: dict[str, tuple[str, Counters]] = {}
        """Counters of pipelines that stopped, so /metrics counters never go down."""
        self._pending: dict[str, StatusUpdate] = {}
        """Status columns to write at the next flush, by mapping uuid (the newest wins)."""
        self._unflushed: dict[str, _Running] = {}
        """Stopped pipelines whose last stats could not be written yet."""
        self._failing_since: dict[str, float] = {}
        """Monotonic time each running mapping's result turned PROBLEM (until a success)."""
        self.enabled: dict[str, str] = {}
        """Names of the mappings enabled in the store, by uuid, as last read from it."""
        self._lags = LagWriter(store, self.replica_id)
        self._tasks: list[asyncio.Task[None]] = []
        self._reconcile_lock = asyncio.Lock()
        self._fingerprints: dict[str, tuple[Any, ...]] = {}
        """What each running mapping was started from (:meth:`_fingerprint`)."""
        self._wake = asyncio.Event()
        self._stopped = False
        self.started = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._owns_functions:
            await self.functions.start()
        await self.reconcile()
        self._tasks.append(asyncio.create_task(self._watch_store(), name="watch-store"))
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="flush-stats"))
        self.started.set()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        # Under the lock: a reconcile that is stopping or starting a pipeline finishes first,
        # instead of being cancelled half-way (which would leave a pipeline running).
        async with self._reconcile_lock:
            for task in self._tasks:
                await cancel_and_wait(task, f"the router's {task.get_name()} task", logger)
            names = {uid: r.config.name for uid, r in self.running.items()}
            results = await asyncio.gather(
                *(self._stop_mapping(u) for u in names), return_exceptions=True
            )
            for name, result in zip(names.values(), results, strict=True):
                if isinstance(result, Exception):
                    logger.error("mapping %s: stopping it failed", name, exc_info=result)
        if self._owns_functions:
            await self.functions.aclose()
        try:
            await self._flush()
        except (RouterError, OSError) as e:
            logger.warning("the last statuses and stats could not be written: %s", redact(str(e)))

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _init_error(self, function: str, message: str) -> None:
        for uid, running in self.running.items():
            if running.config.function == function:
                self._set_status(
                    uid, f"PROBLEM: function {function} failed to initialise: {message}"
                )

    async def update_functions(self, functions: Mapping[str, FunctionConfig]) -> None:
        """Apply a new ``functions:`` section: restart changed invokers and their mappings.

        A function whose new invoker cannot start (a handler that does not import, a port
        in use) keeps its old definition, and its mappings run on as before; the error is
        raised after everything else was applied."""
        changed = {
            name
            for name in set(functions) | set(self.config.functions)
            if functions.get(name) != self.config.functions.get(name)
        }
        if not changed:
            return
        problems: list[str] = []
        try:
            async with self._reconcile_lock:
                if self._stopped:
                    return
                affected = [u for u, r in self.running.items() if r.config.function in changed]
                for uid in affected:
                    await self._stop_mapping(uid)
                problems = await self.functions.replace(functions, changed)
                running = self.functions.config
                applied = {name: running[name] for name in functions if name in running}
                self.config = dataclasses.replace(self.config, functions=applied)
        finally:
            await self.reconcile()
        if problems:
            raise ConfigError("; ".join(problems) + " (kept the previous definition)")

    # ------------------------------------------------------------------ reconcile

    async def _watch_store(self) -> None:
        """Follow the store's change feed. A failure (the store went away while a change was
        being applied) starts a new feed, whose first answer is "reload everything": what
        changed meanwhile is not missed."""
        await Supervisor("change feed", backoff=FEED_BACKOFF).run(self._follow_changes)

    async def _follow_changes(self) -> None:
        feed = self.store.changes()
        try:
            async for changed in feed:
                await self.reconcile(changed or None)
        finally:
            close = getattr(feed, "aclose", None)
            if close is not None:
                await close()

    async def reconcile(self, changed: set[str] | None = None) -> None:
        """Bring the running pipelines in line with the store's mapping rows: all of them,
        or only the mappings named in ``changed`` (rows or checkpoints written; a mapping
        whose checkpoints were reset restarts).

        The rows are read in one query, and a running mapping whose row and functions are
        as they were when it started is left alone without validating its row again (a
        checkpoint write notifies like a configuration change). The states it sets are written
        by the stats writer with every other status (:meth:`_flush`), not one by one."""
        async with self._reconcile_lock:
            if self._stopped:
                return
            if changed:
                # A checkpoint written every second must not cost a pass over every mapping.
                rows = await self.store.get_mappings(changed)
                gone = set(changed) - {row.uuid for row in rows}
                candidates = {row.uuid for row in rows if row.uuid in self.running}
                resets = await self.store.checkpoint_owners(candidates, "reset")
            else:
                rows = await self.store.list_mappings()
                gone = set(self.running) - {row.uuid for row in rows}
                resets = set()
            rows.sort(key=lambda row: row.name)
            for uid in gone:
                self.enabled.pop(uid, None)
            before: dict[str, StatusUpdate] = {}
            after: dict[str, StatusUpdate] = {}
            stops: list[str] = []
            starts: list[tuple[MappingRow, MappingConfig]] = []
            for row in rows:
                if row.enabled:
                    self.enabled[row.uuid] = row.name
                else:
                    self.enabled.pop(row.uuid, None)
                try:
                    self._plan_one(row, row.uuid in resets, before, after, stops, starts)
                except Exception as e:  # noqa: BLE001 - logged with its traceback, shown
                    self._cannot_start(row, e, after)
            # The statuses are written by the stats writer, for every mapping in one
            # transaction: waiting for the store's writer (behind every source's checkpoint
            # and lease writes on SQLite) does not hold up the next change.
            self._queue_statuses(before)
            for uid in stops:
                await self._stop_mapping(uid)
            for row, config in starts:
                try:
                    await self._start_mapping(config)
                except StoreError:
                    # The store went away: the caller tries again (the change feed starts
                    # over with a full reload), nothing to report on this mapping.
                    raise
                except Exception as e:  # noqa: BLE001 - logged with its traceback, shown
                    self._cannot_start(row, e, after)
                else:
                    self._fingerprints[row.uuid] = self._fingerprint(row)
                    after[row.uuid] = {"state": MappingState.ENABLED, "reason": "USER_INITIATED"}
            self._queue_statuses(after)
            for uid in gone & set(self.running):
                await self._stop_mapping(uid)

    def _cannot_start(
        self, row: MappingRow, error: Exception, after: dict[str, StatusUpdate]
    ) -> None:
        message = redact(str(error))
        logger.error("mapping %s: cannot start", row.name, exc_info=error)
        self.problems[row.uuid] = message
        after[row.uuid] = {"last_result": f"PROBLEM: {message}"}

    def _fingerprint(self, row: MappingRow) -> tuple[Any, ...]:
        """What a running mapping was started from: its configuration columns and the
        ``functions:`` it was validated against."""
        columns = (getattr(row, c) for c in CONFIG_COLUMNS)
        return (id(self.config.functions), row.name, row.enabled, row.origin, *columns)

    def _plan_one(
        self,
        row: MappingRow,
        reset: bool,
        before: dict[str, StatusUpdate],
        after: dict[str, StatusUpdate],
        stops: list[str],
        starts: list[tuple[MappingRow, MappingConfig]],
    ) -> None:
        """What reconciling ``row`` takes: status writes before and after, a pipeline to
        stop, one to start."""
        uid = row.uuid
        running = self.running.get(uid)
        if not row.enabled:
            if running is not None:
                before[uid] = {"state": MappingState.DISABLING}
                stops.append(uid)
            if row.state != MappingState.DISABLED or running is not None:
                after[uid] = {"state": MappingState.DISABLED, "reason": "USER_INITIATED"}
            return
        if (
            running is not None
            and not reset
            and self._fingerprints.get(uid) == self._fingerprint(row)
        ):
            if row.state != MappingState.ENABLED:
                # A reconcile cut off by a store outage left the state half-way.
                after[uid] = {"state": MappingState.ENABLED}
            return
        try:
            config = mapping_from_row(row, self.config.functions, resolve=True)
        except ConfigError as e:
            if running is not None:
                stops.append(uid)
            if self.problems.get(uid) != str(e):
                self.problems[uid] = str(e)
                logger.error("mapping %s: invalid configuration: %s", row.name, e)
                after[uid] = {"last_result": f"PROBLEM: {e}"}
            return
        self.problems.pop(uid, None)
        if running is not None:
            if running.config == config and not reset:
                self._fingerprints[uid] = self._fingerprint(row)
                if row.state != MappingState.ENABLED:
                    after[uid] = {"state": MappingState.ENABLED}
                return
            before[uid] = {"state": MappingState.UPDATING}
            stops.append(uid)
        elif row.state != MappingState.ENABLED:
            before[uid] = {"state": MappingState.ENABLING}
        starts.append((row, config))

    async def _start_mapping(self, config: MappingConfig) -> None:
        function = self.config.functions.get(config.function)
        invoker = self.functions.get(config.function)
        if function is None or invoker is None:
            raise ConfigError(f"function {config.function!r} is not declared under functions:")
        arn = function.invoked_arn
        source_cls = registry.load_source(config.source.type)
        source = source_cls(
            config.source.settings,
            SourceContext(
                mapping=config,
                store=self.store,
                replica_id=self.replica_id,
                function_arn=arn,
                ingress=self.ingress,
            ),
        )
        destinations: list[Destination] = []
        on_failure = self._destination(config, config.on_failure, destinations)
        on_success = self._destination(config, config.on_success, destinations)
        matcher: Any = None
        if config.filter_patterns:
            from router.filters import compile_patterns

            matcher = compile_patterns(list(config.filter_patterns))
        uid = config.uuid
        pipeline = Pipeline(
            mapping=config,
            function=function,
            source=source,
            invoker=invoker,
            matcher=matcher,
            on_failure=on_failure,
            on_success=on_success,
            backoff=self.backoff,
            report=lambda result: self._set_status(uid, result),
        )
        self.running[uid] = _Running(config=config, pipeline=pipeline, destinations=destinations)
        pipeline.start()
        init_error = self.functions.init_errors.get(config.function)
        if init_error is not None:
            self._set_status(
                uid, f"PROBLEM: function {config.function} failed to initialise: {init_error}"
            )
        logger.info(
            "mapping %s started (%s -> %s)", config.name, config.source.type, config.function
        )

    def _destination(
        self, config: MappingConfig, spec: DestinationSpec | None, opened: list[Destination]
    ) -> Destination | None:
        return open_destination(self.store, config, spec, opened)

    async def _stop_mapping(self, uid: str) -> None:
        self._fingerprints.pop(uid, None)
        running = self.running.pop(uid, None)
        if running is None:
            return
        await running.pipeline.stop(self.shutdown_timeout)
        for destination in running.destinations:
            what = f"mapping {running.config.name}: its {type(destination).__name__}"
            await close_logged(destination.aclose, what, logger)
        try:
            await self._flush_one(uid, running)
        except RouterError as e:
            # The store is down: the next flush writes these stats.
            logger.info("mapping %s: stats kept until the store answers: %s", uid, e)
            self._unflushed[uid] = running
        self._retire(uid, running)
        self._failing_since.pop(uid, None)
        logger.info("mapping %s stopped", running.config.name)

    def _retire(self, uid: str, running: _Running) -> None:
        total = self.retired.get(uid, (running.config.name, Counters()))[1]
        total.add(running.pipeline.counters)
        self.retired[uid] = (running.config.name, total)

    # ------------------------------------------------------------------ status and stats

    def _set_status(self, uid: str, result: str) -> None:
        # The store gets the latest result at the next flush: a problem followed by a
        # success within one interval is not written, only logged (where it was reported).
        self._pending.setdefault(uid, {})["last_result"] = result
        if result.startswith("PROBLEM"):
            self._failing_since.setdefault(uid, time.monotonic())
        else:
            self._failing_since.pop(uid, None)
        self._wake.set()

    def _queue_statuses(self, updates: Mapping[str, StatusUpdate]) -> None:
        for uid, update in updates.items():
            self._pending.setdefault(uid, {}).update(update)
        if updates:
            self._wake.set()

    def failing_for(self, uid: str) -> float | None:
        """Seconds a running mapping has been failing (PROBLEM since its last success)."""
        since = self._failing_since.get(uid)
        return None if since is None else time.monotonic() - since

    async def _flush_loop(self) -> None:
        """Write statuses and stats every second. While the store is down the writes wait
        (counters keep counting, the newest status per mapping is kept) and are made when it
        is back. Summaries of rate-limited log lines are written here too."""
        supervisor = Supervisor("stats", backoff=FEED_BACKOFF)

        async def flush_forever() -> None:
            while True:
                await wait_event(self._wake, STATS_INTERVAL)
                await asyncio.sleep(0.05)  # let a burst of status changes settle into one write
                self._wake.clear()
                logs.flush_suppressed()
                await supervisor.retry("writing mapping status and stats", self._flush)

        await supervisor.run(flush_forever)

    async def _flush(self) -> None:
        """Write the statuses reported since the last flush and every running mapping's
        new stats: one transaction for all the statuses, one for all the stats."""
        statuses, self._pending = self._pending, {}
        try:
            await self.store.set_mapping_statuses(statuses)
        except BaseException:
            # What could not be written is written on the next flush (newer news first).
            for uid, update in statuses.items():
                self._pending[uid] = {**update, **self._pending.get(uid, {})}
            raise
        deltas = {uid: _delta(running) for uid, running in self.running.items()}
        deltas = {uid: delta for uid, delta in deltas.items() if delta}
        if deltas:
            flushed = {uid: self.running[uid] for uid in deltas}
            await self.store.add_stats_many(deltas)
            for uid, delta in deltas.items():
                _flushed(flushed[uid], delta)
        await self._lags.write({u: r.pipeline.source for u, r in self.running.items()})
        for uid, running in list(self._unflushed.items()):
            await self._flush_one(uid, running)
            del self._unflushed[uid]

    async def _flush_one(self, uid: str, running: _Running) -> None:
        delta = _delta(running)
        if not delta:
            return
        await self.store.add_stats(uid, delta)
        _flushed(running, delta)

    def counters(self) -> dict[str, tuple[str, Counters]]:
        """Live counters per mapping uuid: (mapping name, counters)."""
        return {u: (r.config.name, r.pipeline.counters) for u, r in self.running.items()}

    def ready(self) -> bool:
        return self.started.is_set() and not self._stopped

    async def unready_mappings(self) -> dict[str, Any]:
        """What keeps this router from being ready (empty when it is): mappings enabled in
        the store that do not run here (``not_running``), and running mappings failing for
        longer than ``readiness_failure_grace`` (``failing``). Reads the store; raises
        RouterError (or OSError, TimeoutError) when it cannot."""
        rows = await self.store.list_mappings()
        grace = self.config.settings.readiness_failure_grace
        not_running = sorted(r.name for r in rows if r.enabled and r.uuid not in self.running)
        failing = []
        for uid, running in sorted(self.running.items(), key=lambda item: item[1].config.name):
            seconds = self.failing_for(uid)
            if seconds is not None and seconds > grace:
                failing.append(
                    {
                        "name": running.config.name,
                        "failing_seconds": round(seconds, 1),
                        "last_result": running.pipeline.status,
                    }
                )
        out: dict[str, Any] = {}
        if not_running:
            out["not_running"] = not_running
        if failing:
            out["failing"] = failing
        return out
