"""The running service: every long-lived component of ``router run`` on one exit stack.

``async with Service(config, ...) as service:`` starts, in this order, each on the service's
:class:`~contextlib.AsyncExitStack`:

1. the store (an embedded SQLite store is created or upgraded on the spot);
2. the functions' invokers (handlers imported, runtime listeners bound);
3. with ``router.ingress``: the durable asynchronous queue (:mod:`router.ingress.queue`),
   the ingress listener (the routes pushed sources register, :mod:`router.ingress`), each
   function's asynchronous Invoke target and Lambda's Invoke API
   (:mod:`router.ingress.invoke`);
4. the operations listener (``/healthz``, ``/readyz``, ``/metrics``), unless it is ``off``;
5. the router: the YAML's mappings are applied to the store first, then every enabled mapping
   runs (its source, lanes and destinations), following changes made in the store;
6. the configuration watcher, when the configuration comes from files.

Nothing is written to the store until the functions and the listeners have started, so a
function or a port that cannot start leaves the store as it was. Leaving the block closes the
components in reverse order: the watcher lets a change being applied finish, the ingress
listener stops accepting connections, the router drains in-flight batches (up to
``router.shutdown_timeout``), then the listeners (requests in progress are answered), the
invokers and the store close. A component that fails to close is logged; the others still
close.

A new component is one more ``await self._start(stack, "what", component)`` line in
:meth:`Service.__aenter__`, where it belongs in that order: anything with ``__aenter__`` /
``__aexit__``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import TypeVar

from router import __version__, tracing
from router.app import Router, default_backoff, default_replica_id, tune_gc
from router.config import RouterConfig, apply_config
from router.errors import ConfigError
from router.functions import Functions
from router.ingress import AsyncQueue, Ingress, IngressListener
from router.ingress.invoke import FunctionTargets, InvokeApi
from router.metrics import registry_for
from router.ops import OperationsListener
from router.store import DEFAULT_URL, SQLStore, connect
from router.watcher import ConfigWatcher

logger = logging.getLogger(__name__)

T = TypeVar("T")

ExitCallback = Callable[
    [type[BaseException] | None, BaseException | None, TracebackType | None],
    Awaitable[bool | None],
]


class Service:
    """The router with everything it runs on; see the module's docstring.

    ``store_url`` defaults to ``router.store`` of the configuration (else the embedded SQLite
    store), ``http_listen`` to ``router.http_listen`` (``"off"``: no listener); ``watch`` is
    the configuration's path, re-applied when it changes (None: not watched), and
    ``watch_loaded`` the :func:`router.watcher.fingerprint` of its files taken before
    ``config`` was read from them (a change made since is applied once the router runs).
    """

    def __init__(
        self,
        config: RouterConfig,
        *,
        store_url: str | None = None,
        http_listen: str | None = None,
        watch: str | None = None,
        watch_loaded: bytes | None = None,
        replica_id: str | None = None,
    ) -> None:
        self.config = config
        if store_url is None:
            store = config.settings.store
            store_url = DEFAULT_URL if store is None else store.reveal()
        self.store_url = store_url
        self.http_listen = config.settings.http_listen if http_listen is None else http_listen
        self.watch = watch
        self.watch_loaded = watch_loaded
        self.replica_id = replica_id
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Service:
        config = self.config
        async with AsyncExitStack() as stack:
            provider = tracing.configure()
            if provider is not None:
                stack.callback(provider.shutdown)  # the last spans are exported at the end
            self.store: SQLStore = await self._start(stack, "the store", _connected(self.store_url))
            try:
                functions = Functions(config.functions, self.store)
                self.functions = await self._start(stack, "the functions' invokers", functions)
            except ConfigError as e:
                raise config.relocate(e) from e
            self.ingress: Ingress | None = None
            ingress_settings = config.settings.ingress
            if ingress_settings is not None:
                # Closed after the listener: requests still being answered may queue events.
                queue = AsyncQueue(
                    self.store,
                    replica_id=self.replica_id or default_replica_id(),
                    lease_timeout=ingress_settings.lease_timeout,
                    poll_interval=ingress_settings.poll_interval,
                )
                await self._start(stack, "the asynchronous queue", queue)
                ingress_listener = IngressListener(
                    ingress_settings, shutdown_timeout=config.settings.shutdown_timeout
                )
                await self._start(stack, "the ingress listener", ingress_listener)
                self.ingress = Ingress(
                    settings=ingress_settings,
                    listener=ingress_listener,
                    functions=self.functions,
                    queue=queue,
                )
                # Each function's asynchronous Invoke target, drained after the router.
                targets = FunctionTargets(
                    self.ingress,
                    replica_id=queue.replica_id,
                    backoff=default_backoff(),
                    shutdown_timeout=config.settings.shutdown_timeout,
                )
                await self._start(stack, "the asynchronous Invoke targets", targets)
                await self._start(stack, "the Invoke API", InvokeApi(self.ingress, targets))
            self.router = Router(
                config,
                self.store,
                functions=self.functions,
                replica_id=self.replica_id,
                ingress=self.ingress,
            )
            self.metrics = registry_for(self.router)
            """This service's Prometheus registry (served on /metrics)."""
            if self.http_listen != "off":
                listener = OperationsListener(self.router, self.http_listen, self.metrics)
                await self._start(stack, "the operations listener", listener)
            await apply_config(config, self.store)
            # The mappings are in the store now; the loaded ones are not kept.
            self.config = config = config.running()
            await self._start(stack, "the router", self.router)
            if self.ingress is not None:
                # Stopping: no new connections before the router drains (callers retry
                # elsewhere); requests in progress are answered until the listener closes.
                stack.push_async_exit(
                    _logged("stopping the ingress listener", _exit(self.ingress.listener))
                )
            if self.watch is not None:
                watcher = ConfigWatcher(
                    self.watch, self.router, self.store, loaded=self.watch_loaded
                )
                await self._start(stack, "the configuration watcher", watcher)
            self._stack = stack.pop_all()
        tune_gc()
        logger.info(
            "router %s running: %d mappings running, replica %s",
            __version__,
            len(self.router.running),
            self.router.replica_id,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        logger.info("stopping: draining in-flight batches")
        await stack.aclose()
        logger.info("stopped")

    @staticmethod
    async def _start(
        stack: AsyncExitStack, what: str, component: AbstractAsyncContextManager[T]
    ) -> T:
        """Enter ``component`` on ``stack``; when the stack unwinds, a failure to close it
        is logged, naming ``what``, and does not keep the components below from closing."""
        value = await component.__aenter__()
        stack.push_async_exit(_logged(what, component.__aexit__))
        return value


def _logged(what: str, exit: ExitCallback) -> ExitCallback:
    async def close(
        kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            await exit(kind, error, tb)
        except Exception:
            logger.exception("stopping %s failed", what)
        return False

    return close


def _exit(listener: IngressListener) -> ExitCallback:
    async def stop(*exc: object) -> None:
        await listener.stop_accepting()

    return stop


@contextlib.asynccontextmanager
async def _connected(url: str) -> AsyncIterator[SQLStore]:
    """The store at ``url`` for the duration of the block (see :func:`router.store.connect`)."""
    store = await connect(url)
    try:
        yield store
    finally:
        await store.aclose()


__all__ = ["Service"]
