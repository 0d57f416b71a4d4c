"""File watching that survives the OS running out of inotify instances or watches.

``watchfiles`` fails at once when the OS refuses a new watcher (``Too many open files``: the
per-user limit of inotify instances, 128 by default, shared by every process of the user;
``No space left on device``: the limit of watches). A watcher that gave up would leave the
router blind to changes without a word, so :func:`watch` says so at WARNING, once, with the
limit to raise, and polls the path instead.

``watchfiles.awatch`` blocks one of anyio's worker threads for as long as it waits for a
change (up to 5 s at a time), and anyio's default thread limiter lends 40 threads in all, to
every caller in the event loop: with more than ~40 watches (directory mappings and the
configuration watcher), the others waited for a thread, and a file dropped into a folder
whose watch was waiting was seen up to 5 s late. Every watch therefore raises that limit by
one for as long as it runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
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
            with _own_thread():
                async for changes in awatch(
                    path,
                    force_polling=True if polling else None,
                    poll_delay_ms=POLL_MS,
                    **options,
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


@contextmanager
def _own_thread() -> Iterator[None]:
    """One more thread in anyio's default limiter (of the running event loop) for as long as
    the block runs: the thread the watch holds while it waits."""
    from anyio.to_thread import current_default_thread_limiter

    limiter = current_default_thread_limiter()
    limiter.total_tokens += 1
    try:
        yield
    finally:
        if not math.isinf(limiter.total_tokens):
            limiter.total_tokens = max(1, int(limiter.total_tokens) - 1)
