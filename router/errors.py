"""One error tree for the whole router.

Every error the router raises on purpose derives from :class:`RouterError`. The class-level
``retriable`` flag tells a worker loop whether waiting and trying again can help (a broker
that is down) or not (a bad configuration).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


class RouterError(Exception):
    """Root of all errors raised by the router."""

    retriable: ClassVar[bool] = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """Where in the user's configuration a problem is."""

    file: str | None = None
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [p for p in (where, self.path) if p]
        return ": ".join(parts)


class ConfigError(RouterError):
    """A user-facing configuration problem; ``str()`` is ``FILE:LINE: key.path: message``."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location or Location()
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.location)
        return f"{where}: {self.message}" if where else self.message


class ConfigErrors(ConfigError):
    """Several configuration problems found in one pass; nothing was applied."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class MissingDependencyError(RouterError, ImportError):
    """An optional library is not installed; the message names the extra to install."""

    def __init__(self, message: str, *, library: str = "", extra: str = "") -> None:
        super().__init__(message)
        self.library = library
        """The library that is missing (``aiokafka``), when known."""
        self.extra = extra
        """The pip extra that brings it (``kafka``), when known."""


class SetupError(RouterError):
    """The router cannot start here (a store it cannot open, a port in use): one line that
    says how to fix it (``router run`` exits 2)."""


class PlatformError(RouterError):
    """Infrastructure failed (broker, store, network); trying again later may help."""

    retriable = True


class SourceError(PlatformError):
    """The source (broker, queue, folder) could not be read or acknowledged."""


class LeaseLost(SourceError):
    """Another replica took over a lease this replica held (it could not renew it in time:
    paused, overloaded, cut off from the store). The work waits for the lease again."""


class StoreError(PlatformError):
    """The SQL store could not be reached or a statement failed."""

    detail: str | None = None
    """The driver's own message (``[Errno 111] Connect call failed ...``), without the
    store's URL and the operation that the full message names."""


class SchemaOutdatedError(StoreError):
    """The store's schema is older than this router; ``router db upgrade`` fixes it."""

    retriable = False


class DestinationError(PlatformError):
    """A destination could not accept a record; the lane blocks and retries."""


class FunctionError(RouterError):
    """An answer of a function the router cannot accept as it is.

    A function that raised, timed out or was throttled is not an exception in the router: an
    invoker classifies every ending into an :class:`~router.models.InvokeResult` (its
    ``outcome``), and the pipeline retries by the mapping's policy. These errors are what the
    pipeline raises where it reads an answer."""


class PartialBatchFailure(FunctionError):
    """A partial batch response (``ReportBatchItemFailures``) that Lambda would not accept: not
    an object, ``batchItemFailures`` not a list, an item without a non-empty string
    ``itemIdentifier`` or naming no record of the batch. As on AWS, the whole batch failed."""
