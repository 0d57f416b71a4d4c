"""Re-applying the YAML configuration when its files change, while the router runs.

A configuration that fails validation is rejected whole, with the error logged, and the
running mappings stay as they were. Besides the file watcher's events, the files' bytes are
compared with what was applied every second, so an edit made while the watcher was starting
(or one the OS did not report) is not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path

from router.abc import Store
from router.aio import cancel_and_wait, wait_event
from router.app import Router
from router.config import apply_config, config_files, load_checked_config
from router.errors import ConfigError
from router.fswatch import watch

logger = logging.getLogger(__name__)

STARTUP_WAIT = 10.0
"""Seconds entering the watcher waits for the files to be watched."""


class ConfigWatcher:
    """``async with ConfigWatcher(path, router, store)``: ``path`` (a file or a directory of
    files) is applied to ``store`` whenever it changes, and its functions to ``router``.
    Entering returns once the files are watched; leaving lets a change that is being applied
    finish, then stops."""

    def __init__(
        self, path: str, router: Router, store: Store, *, loaded: bytes | None = None
    ) -> None:
        self.path = path
        self.loaded = loaded
        """:func:`fingerprint` of the files taken before the running configuration was read
        from them: a change made since (while the router was starting) is applied at once.
        None: the files as they are when the watcher starts."""
        self.router = router
        self.store = store
        self._watching = asyncio.Event()
        self._applying = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ConfigWatcher:
        self._task = asyncio.create_task(self._watch(), name="watch-config")
        await wait_event(self._watching, STARTUP_WAIT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        async with self._applying:
            task.cancel()
        await cancel_and_wait(task, "the configuration watcher", logger)

    async def _watch(self) -> None:
        applied = self.loaded
        if applied is None:
            applied = await asyncio.to_thread(fingerprint, self.path)
        changes = watch(
            self.path,
            what="the configuration",
            debounce=300,
            rust_timeout=1000,
            yield_on_timeout=True,
        )
        async for _ in changes:
            self._watching.set()
            current = await asyncio.to_thread(fingerprint, self.path)
            if current == applied:
                continue
            async with self._applying:
                if await self._apply():
                    applied = current

    async def _apply(self) -> bool:
        """Apply the files as they are now; False when they are to be looked at again (the
        store could not be written)."""
        try:
            config = await asyncio.to_thread(
                functools.partial(load_checked_config, self.path, to_run=True)
            )
        except ConfigError as e:
            # Rejected whole; looked at again when the files change.
            logger.error("configuration rejected, running mappings unchanged:\n%s", e)
            return True
        try:
            plan = await apply_config(config, self.store)
            if not plan.is_empty:
                logger.info("configuration changed:\n%s", plan.render())
        except ConfigError as e:
            logger.error("configuration not applied, running mappings unchanged: %s", e)
            return False
        except Exception as e:  # noqa: BLE001 - the store may be down: retried next tick
            logger.error("cannot apply the changed configuration (will retry): %s", e)
            return False
        try:
            await self.router.update_functions(config.functions)
        except ConfigError as e:
            logger.error("configuration partly applied: %s", e)
        except Exception as e:  # noqa: BLE001 - the mappings were applied: do not retry them
            logger.error("cannot apply the changed configuration (will retry): %s", e)
        return True


def fingerprint(path: str) -> bytes:
    """The configuration's bytes, to notice a change the file watcher may have missed."""
    parts = []
    for file in config_files(path):
        with contextlib.suppress(OSError):
            parts.append(str(file).encode() + b"\0" + Path(file).read_bytes())
    return b"\0\0".join(parts)
