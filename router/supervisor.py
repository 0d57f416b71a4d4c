"""Supervision: the long-running work of a mapping keeps going through outages.

One :class:`Supervisor` per mapping runs its source (``Source.run`` and every task the source
starts under it: watchers, fire loops, lease keepers, pollers, settle tasks) and starts it
again after a failure. A source that must not start over for a failed store call (a fire it
already claimed, a lease it still holds) retries that one operation in place with
:meth:`Supervisor.retry`. The router runs its own housekeeping (the store's change feed,
stats flushing) under supervisors too.

What a failure means (:func:`classify`):

* a **configuration error** (:func:`is_configuration_error`: a :class:`RouterError` that is
  not retriable and is not a platform failure, e.g. :class:`ConfigError`) stops the mapping;
  its status says so and names the error. Changing the mapping starts it again.
* an **outage** (:class:`PlatformError`: store, source, broker, destination, a lost lease;
  ``OSError``; ``TimeoutError``) is retried with capped exponential backoff and full jitter.
  Platform errors flagged as not retriable (a statement the store refuses, a schema that
  needs ``router db upgrade``) are retried too: waiting alone does not fix them, but the
  operator's fix then takes effect without a restart.
* anything else is a **bug**. It is retried like an outage (a stopped mapping loses more than
  one that tries again, and the trigger is often one bad moment of a remote service), and
  logged at ERROR with its traceback, rate-limited.
* an ``ExceptionGroup`` (from a ``TaskGroup``) is classified by the exceptions inside it,
  and the status names the first of those, never the group.

While a failure lasts, the mapping's ``last_processing_result`` reads ``PROBLEM: <cause>``
(the operation, the key or file, the error). Once the work runs again (the source calls
:meth:`Supervisor.working`, a retried operation succeeds, or work that was started again
runs for ``healthy_after`` seconds without failing) the result goes back to what it was
before the problem, and the recovery is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from router import logs
from router.aio import wait_event
from router.backoff import Backoff
from router.errors import DestinationError, PlatformError, RouterError, SourceError, StoreError
from router.secrets import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESTART_BACKOFF = Backoff(base=0.5, cap=15.0)
"""Waits between attempts: up to 1 s after the first failure, doubling up to 15 s."""
HEALTHY_AFTER = 10.0
"""Work started again that runs this long without failing counts as working again."""
LOG_EVERY = 60.0
"""While one kind of failure lasts it is logged at most this often (the first at once; the
rest are counted in one summary line, :class:`router.logs.LimitedLogger`)."""

Kind = Literal["configuration", "outage", "bug"]
_RUN = "run"
"""The token of a failure of the supervised work itself (not of one retried operation)."""


class Reporter(Protocol):
    """Where a supervisor shows a problem: the mapping's ``last_processing_result``."""

    @property
    def status(self) -> str: ...

    def report(self, result: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Failure:
    """A failure as the supervisor sees it."""

    cause: BaseException
    """The exception that explains it: for an ExceptionGroup, the sub-exception."""
    kind: Kind


def is_configuration_error(error: BaseException) -> bool:
    """Whether ``error`` stops a mapping: a RouterError that no retry can fix and that is not
    an infrastructure failure."""
    return (
        isinstance(error, RouterError)
        and not error.retriable
        and not isinstance(error, PlatformError)
    )


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` is a failure of something the router talks to."""
    return isinstance(error, PlatformError | OSError | TimeoutError)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    elif not isinstance(error, asyncio.CancelledError):
        yield error


def classify(error: BaseException) -> Failure:
    """Configuration error, outage or bug; a group counts as its worst member (a
    configuration error over a bug over an outage)."""
    leaves = list(_leaves(error)) or [error]
    for leaf in leaves:
        if is_configuration_error(leaf):
            return Failure(leaf, "configuration")
    for leaf in leaves:
        if not is_outage(leaf):
            return Failure(leaf, "bug")
    return Failure(leaves[0], "outage")


def describe(error: BaseException, what: str = "") -> str:
    """The cause in one line: ``store unavailable while writing the checkpoint of a.csv:
    [Errno 111] Connect call failed``. Without ``what`` the error's own message (the router's
    errors name their operation)."""
    text = redact(str(error)) or type(error).__name__
    if not what:
        return text
    if isinstance(error, StoreError):
        part = "store"
    elif isinstance(error, DestinationError):
        part = "destination"
    elif isinstance(error, SourceError):
        part = "source"
    elif isinstance(error, OSError | TimeoutError):
        part = "network"
    else:
        return f"{what}: {type(error).__name__}: {text}"
    detail = redact(getattr(error, "detail", None) or "") or text
    if isinstance(error, OSError | TimeoutError) and not str(error):
        detail = type(error).__name__
    state = "unavailable" if getattr(error, "retriable", True) else "failed"
    return f"{part} {state} while {what}: {detail}"


def problem_text(failure: Failure, what: str = "") -> str:
    """The ``last_processing_result`` for ``failure``."""
    cause = describe(failure.cause, what)
    if failure.kind == "configuration":
        return f"PROBLEM: {cause} (mapping stopped: fix its configuration)"
    if failure.kind == "bug":
        where = f" while {what}" if what else ""
        message = redact(str(failure.cause))
        name = type(failure.cause).__name__
        return f"PROBLEM: internal error{where}: {name}: {message} (retrying; see the router log)"
    return f"PROBLEM: {cause}"


class Supervisor:
    """Keeps one mapping's work going (see the module docstring).

    ``name`` starts every log line (``mapping orders``). ``reporter`` (the mapping's pipeline)
    shows problems; without one, problems are only logged.
    """

    def __init__(
        self,
        name: str,
        reporter: Reporter | None = None,
        *,
        backoff: Backoff = RESTART_BACKOFF,
        healthy_after: float = HEALTHY_AFTER,
        log_every: float = LOG_EVERY,
    ) -> None:
        self.name = name
        self.reporter = reporter
        self.backoff = backoff
        self.healthy_after = healthy_after
        self.log_every = log_every
        self.stopped: Failure | None = None
        """Set when a configuration error stopped the work."""
        self._failing: dict[object, str] = {}
        """What fails right now (the work itself, or retried operations): token -> problem."""
        self._before: str | None = None
        self._shown: str | None = None
        self._since = 0.0
        self._attempts = 0
        self._lines = logs.LimitedLogger(logger, lines=1, interval=log_every)
        """Failure lines, one per (kind, exception type) and ``log_every``."""

    @property
    def failing(self) -> bool:
        """Whether something this supervisor watches is failing now."""
        return bool(self._failing)

    # ------------------------------------------------------------------ the work

    async def run(
        self, work: Callable[[], Awaitable[None]], *, stopping: asyncio.Event | None = None
    ) -> bool:
        """Run ``work()`` until it returns (True), ``stopping`` is set (True), or a
        configuration error stops it (False). Every other failure is reported, logged and
        followed by a new attempt after a backoff."""
        stopping = stopping or asyncio.Event()
        attempt = 0
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            timer = loop.call_later(self.healthy_after, self._resolved, _RUN) if attempt else None
            try:
                await work()
                self._resolved(_RUN)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - classified: only configuration stops
                failure = classify(e)
                if failure.kind == "configuration":
                    self._stop(failure)
                    return False
                attempt = attempt + 1 if _RUN in self._failing else 1
                self._fail(_RUN, failure, attempt, "")
            finally:
                if timer is not None:
                    timer.cancel()
            await wait_event(stopping, self.backoff.delay(attempt))
        return True

    def working(self) -> None:
        """The source works (again): its lease is held, its first scan or catch-up done. A
        problem of the work itself clears at once instead of after ``healthy_after``."""
        self._resolved(_RUN)

    async def retry(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """``await operation()`` until it succeeds. Outages are reported as the problem of
        ``what`` (``writing the checkpoint of inbox/a.csv``) and retried with backoff; a
        configuration error or a bug is raised (to :meth:`run`, which handles it)."""
        token = object()
        attempt = 0
        try:
            while True:
                try:
                    result = await operation()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failure = classify(e)
                    if failure.kind != "outage":
                        raise
                    attempt += 1
                    self._fail(token, failure, attempt, what)
                    await asyncio.sleep(self.backoff.delay(attempt))
                    continue
                if attempt:
                    self._resolved(token)
                return result
        finally:
            # Cancelled while failing (the work stops or starts over): not failing any more.
            self._failing.pop(token, None)

    # ------------------------------------------------------------------ state

    def _fail(self, token: object, failure: Failure, attempt: int, what: str) -> None:
        now = time.monotonic()
        if not self._failing:
            self._since = now
            self._attempts = 0
        self._attempts += 1
        text = problem_text(failure, what)
        self._failing[token] = text
        self._show(text)
        self._log(failure, attempt, what)

    def _resolved(self, token: object) -> None:
        if self._failing.pop(token, None) is None:
            return
        if self._failing:
            self._show(next(reversed(self._failing.values())))
            return
        self._lines.reset()
        logger.info(
            "%s: working again after %.1fs (%d failed attempts)",
            self.name,
            time.monotonic() - self._since,
            self._attempts,
        )
        reporter, shown, before = self.reporter, self._shown, self._before
        self._shown = self._before = None
        if reporter is not None and before is not None and reporter.status == shown:
            reporter.report(before)

    def _show(self, text: str) -> None:
        reporter = self.reporter
        if reporter is None:
            return
        if self._shown is None or reporter.status != self._shown:
            # What the status was before this problem; a problem of the supervisor that is
            # still showing is not "before".
            self._before = reporter.status
        self._shown = text
        reporter.report(text)

    def _stop(self, failure: Failure) -> None:
        self.stopped = failure
        self._failing.clear()
        text = problem_text(failure)
        self._shown = self._before = None
        if self.reporter is not None:
            self.reporter.report(text)
        logger.error("%s: stopped: %s", self.name, text.removeprefix("PROBLEM: "))

    def _log(self, failure: Failure, attempt: int, what: str) -> None:
        key = (failure.kind, type(failure.cause).__name__)
        if failure.kind == "bug":
            where = f" while {what}" if what else ""
            self._lines.error(
                key,
                "%s: unexpected error%s (attempt %d), retrying",
                self.name,
                where,
                attempt,
                exc_info=failure.cause,
                cause=failure.kind,
            )
        else:
            self._lines.warning(
                key,
                "%s: %s (attempt %d), retrying",
                self.name,
                describe(failure.cause, what),
                attempt,
                cause=failure.kind,
            )
