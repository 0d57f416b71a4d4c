"""File watching that survives the OS running out of inotify instances or watches.

``watchfiles`` fails at once when the OS refuses a new watcher (``Too many open files``: the
per-user limit of inotify instances, 128 by default, shared by every process of the user;
``No space left on device``: the limit of watches). A watcher that gave up would leave the
router blind to changes without a word, so :func:`watch` says so at WARNING, once, with the
limit to raise, and polls the path instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

POLL_MS = 300
"""How often a polled path is looked at."""

_OUT_OF_WATCHES = ("os error 24", "os error 28", "Too many open files", "No space left")


async def watch(path: str | Path, *, what: str, **options: Any) -> AsyncGenerator[set[Any], None]:
    """``watchfiles.awatch(path, **options)``, falling back to polling (with a WARNING naming
    ``what``) when the OS has no inotify instance or watch left."""
    from watchfiles import awatch

    polling = False
    while True:
        try:
            async for changes in awatch(
                path, force_polling=True if polling else None, poll_delay_ms=POLL_MS, **options
            ):
                yield changes
            return
        except RuntimeError as e:
            if polling or not any(s in str(e) for s in _OUT_OF_WATCHES):
                raise
            logger.warning(
                "%s: cannot watch %s for changes (%s): the OS limit of inotify instances or "
                "watches is reached (sysctl fs.inotify.max_user_instances / "
                "fs.inotify.max_user_watches; every router and other program of the user "
                "counts); polling it every %d ms instead",
                what,
                path,
                e,
                POLL_MS,
            )
            polling = True
