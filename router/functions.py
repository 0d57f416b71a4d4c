"""The invokers of the configured functions (``functions:``), one per function."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Iterator, Mapping

from router import registry
from router.abc import Invoker, InvokerContext, MetricFamily, Store
from router.aio import close_logged
from router.errors import RouterError
from router.models import FunctionConfig
from router.secrets import redact

logger = logging.getLogger(__name__)


class Functions:
    """The invokers of the functions, by function name.

    ``start`` (or entering ``async with``) starts every invoker: handlers imported, listeners
    bound; the first one that cannot start raises, and the ones started are closed. ``replace``
    swaps the invokers of changed functions while the router runs; ``aclose`` closes them all,
    logging each that fails to close; it is idempotent. An init error an invoker reports (a
    runtime that failed to start) is kept in ``init_errors`` and passed to ``on_init_error``.
    """

    def __init__(self, functions: Mapping[str, FunctionConfig], store: Store) -> None:
        self.config: dict[str, FunctionConfig] = dict(functions)
        """The definitions the invokers run, by name."""
        self.store = store
        self.invokers: dict[str, Invoker] = {}
        self.init_errors: dict[str, str] = {}
        self.on_init_error: Callable[[str, str], None] | None = None
        """Told ``(function, message)`` when an invoker reports an init error."""
        self.on_replaced: Callable[[Collection[str]], None] | None = None
        """Told the names :meth:`replace` was asked to redefine, once they run."""

    def get(self, name: str) -> Invoker | None:
        return self.invokers.get(name)

    def metrics(self) -> Iterator[MetricFamily]:
        """The metric families of every invoker."""
        for invoker in self.invokers.values():
            yield from invoker.metrics()

    async def start(self) -> None:
        try:
            for function in list(self.config.values()):
                await self.start_one(function)
        except BaseException:
            await self.aclose()
            raise

    async def start_one(self, function: FunctionConfig) -> Invoker:
        """The invoker of ``function``, started now unless it runs already."""
        invoker = self.invokers.get(function.name)
        if invoker is None:
            invoker = self.invokers[function.name] = await self._build(function)
            self.config[function.name] = function
        return invoker

    async def aclose(self) -> None:
        invokers, self.invokers = self.invokers, {}
        for name, invoker in invokers.items():
            await close_logged(invoker.aclose, f"function {name}: its invoker", logger)

    async def __aenter__(self) -> Functions:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def replace(
        self, functions: Mapping[str, FunctionConfig], names: Collection[str]
    ) -> list[str]:
        """Run the definitions ``functions`` gives for ``names`` (a name it lacks is removed).
        The old invoker is closed first (a runtime-api invoker's new listener needs its port).
        A new invoker that cannot start leaves the previous definition running (or none, for
        a new function); returns what went wrong, one line per function."""
        problems: list[str] = []
        for name in sorted(names):
            old = self.invokers.pop(name, None)
            if old is not None:
                await old.aclose()
            previous = self.config.pop(name, None)
            if name not in functions:
                continue
            try:
                self.invokers[name] = await self._build(functions[name])
                self.config[name] = functions[name]
            except (RouterError, OSError) as e:
                problems.append(f"function {name}: {redact(str(e))}")
                if previous is not None:
                    self.invokers[name] = await self._build(previous)
                    self.config[name] = previous
        if self.on_replaced is not None:
            self.on_replaced(names)
        return problems

    async def _build(self, function: FunctionConfig) -> Invoker:
        cls = registry.load_invoker(function.invoker)
        context = InvokerContext(
            store=self.store, report_init_error=functools.partial(self._init_error, function.name)
        )
        invoker: Invoker = cls(function, context)
        await invoker.start()
        return invoker

    def _init_error(self, function: str, message: str) -> None:
        self.init_errors[function] = message
        if self.on_init_error is not None:
            self.on_init_error(function, message)
