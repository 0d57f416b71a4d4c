"""Change feeds: tell the router which mappings changed in the store.

PostgreSQL: triggers (migration 0001) call ``pg_notify('router_changes', <mapping uuid>)``
when a mapping's configuration or a checkpoint changes; a dedicated asyncpg connection
LISTENs, coalesces bursts and reconnects with backoff. SQLite: triggers bump a per-mapping
counter in ``mapping_versions``, which is polled.

A feed first yields ``set()`` ("reload everything") once it is listening, and again after it
had to reconnect: whatever changed before it listened or while it was cut off is covered.
Over-reporting is harmless (the router compares what it loads); missing a change is not.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from router.aio import get_within, wait_event

logger = logging.getLogger(__name__)

CHANNEL = "router_changes"
COALESCE_SECONDS = 0.05
"""Notifications arriving this close together are yielded as one set."""
PING_SECONDS = 30.0
"""An idle LISTEN connection is checked this often, so a silently dead one is replaced."""
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0


class ChangeFeed:
    """An async iterator of sets of changed mapping uuids (empty set: reload all).

    ``start()`` begins listening (the first ``__anext__`` calls it); ``aclose()`` stops and
    is idempotent. The owning store closes its feeds when it closes.
    """

    def __init__(self, on_close: Callable[[ChangeFeed], None] | None = None) -> None:
        self._started = False
        self._primed = False
        self._closed = asyncio.Event()
        self._on_close = on_close

    def __aiter__(self) -> ChangeFeed:
        return self

    async def __anext__(self) -> set[str]:
        if self._closed.is_set():
            raise StopAsyncIteration
        if not self._primed:
            await self.start()
            self._primed = True
            return set()
        result = await self._next()
        if result is None:
            raise StopAsyncIteration
        return result

    async def start(self) -> None:
        """Begin listening now (idempotent)."""
        if self._started:
            return
        self._started = True
        await self._start()

    async def aclose(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        await self._close()
        if self._on_close is not None:
            self._on_close(self)

    async def __aenter__(self) -> ChangeFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _next(self) -> set[str] | None:
        """The next non-empty change (or ``set()``); None once closed."""
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError

    async def _wait_closed(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless the feed closes; True if it closed."""
        return await wait_event(self._closed, seconds)


class PgChangeFeed(ChangeFeed):
    """LISTEN on ``router_changes`` over a dedicated asyncpg connection."""

    def __init__(
        self,
        connect_kwargs: dict[str, Any],
        display_url: str,
        on_close: Callable[[ChangeFeed], None] | None = None,
        *,
        ping_seconds: float = PING_SECONDS,
    ) -> None:
        super().__init__(on_close)
        self._connect_kwargs = connect_kwargs
        self._display_url = display_url
        self._ping_seconds = ping_seconds
        self._conn: Any = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._failures = 0

    async def _start(self) -> None:
        # The first connection is made before start() returns, so that nothing committed
        # after it is missed; if it fails, _next() keeps trying with backoff.
        try:
            await self._connect()
        except Exception as e:  # noqa: BLE001 - any connect failure means "retry later"
            self._connection_failed(e)

    async def _connect(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(**self._connect_kwargs)
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._on_terminated)
        self._conn = conn
        if self._failures:
            logger.info("change feed on %s: listening again", self._display_url)
        self._failures = 0

    def _connection_failed(self, error: BaseException) -> None:
        self._failures += 1
        if self._failures == 1:
            logger.warning(
                "change feed on %s: connection lost (%s); reconnecting with backoff",
                self._display_url,
                type(error).__name__,
            )

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._queue.put_nowait(payload)

    def _on_terminated(self, conn: Any) -> None:
        if conn is self._conn:
            self._queue.put_nowait(None)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _reconnect(self) -> bool:
        """Connect with backoff until it works (True) or the feed closes (False)."""
        delay = BACKOFF_MIN
        while not self._closed.is_set():
            try:
                await self._connect()
                return True
            except Exception as e:  # noqa: BLE001 - any connect failure means "retry later"
                self._connection_failed(e)
            if await self._wait_closed(delay * random.uniform(0.5, 1.0)):
                return False
            delay = min(delay * 2, BACKOFF_MAX)
        return False

    async def _next(self) -> set[str] | None:
        while not self._closed.is_set():
            if self._conn is None:
                if not await self._reconnect():
                    return None
                # Notifications sent while disconnected are lost: reload everything.
                return set()
            try:
                payload = await get_within(self._queue, self._ping_seconds)
            except TimeoutError:
                if not await self._ping():
                    self._drop_connection()
                continue
            if payload is None:
                if self._closed.is_set():
                    return None
                self._connection_failed(ConnectionError("terminated"))
                self._drop_connection()
                continue
            payloads: list[str | None] = [payload]
            await asyncio.sleep(COALESCE_SECONDS)
            while not self._queue.empty():
                payloads.append(self._queue.get_nowait())
            if None in payloads:
                # The connection ended inside the burst: reload all after reconnecting.
                self._drop_connection()
            if self._closed.is_set():
                return None
            if "" in payloads or None in payloads:
                return set()
            return {p for p in payloads if p}
        return None

    async def _ping(self) -> bool:
        try:
            await self._conn.fetchval("SELECT 1", timeout=5)
            return True
        except Exception as e:  # noqa: BLE001 - a failed ping means "reconnect"
            self._connection_failed(e)
            return False

    async def _close(self) -> None:
        self._queue.put_nowait(None)
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        try:
            await conn.remove_listener(CHANNEL, self._on_notify)
            await conn.close(timeout=2)
        except Exception:  # noqa: BLE001 - closing a broken connection: drop it
            conn.terminate()


class PollingChangeFeed(ChangeFeed):
    """Polls per-mapping change counters (SQLite), yielding the uuids whose counter moved."""

    def __init__(
        self,
        read_versions: Callable[[], Awaitable[dict[str, int]]],
        display_url: str,
        interval: float,
        on_close: Callable[[ChangeFeed], None] | None = None,
    ) -> None:
        super().__init__(on_close)
        self._read_versions = read_versions
        self._display_url = display_url
        self._interval = interval
        self._versions: dict[str, int] | None = None
        self._failing = False

    async def _start(self) -> None:
        self._versions = await self._poll()

    async def _poll(self) -> dict[str, int] | None:
        try:
            versions = await self._read_versions()
        except Exception as e:  # noqa: BLE001 - a failed poll is retried next interval
            if not self._failing:
                logger.warning(
                    "change feed on %s: polling failed (%s); retrying", self._display_url, e
                )
            self._failing = True
            return None
        if self._failing:
            logger.info("change feed on %s: polling works again", self._display_url)
        self._failing = False
        return versions

    async def _next(self) -> set[str] | None:
        while not await self._wait_closed(self._interval):
            versions = await self._poll()
            if versions is None:
                continue
            previous, self._versions = self._versions, versions
            if previous is None:
                return set()  # polling had failed: changes may have been missed
            changed = {
                uuid
                for uuid in previous.keys() | versions.keys()
                if previous.get(uuid) != versions.get(uuid)
            }
            if changed:
                return changed
        return None

    async def _close(self) -> None:
        pass
