"""The base of sources whose events are pushed to the ingress listener (``eventbridge``,
``sns``, ``http``) instead of read by polling.

A pushed source is a :class:`~router.abc.Source` like any other: the router starts one per
mapping (on every replica), under the mapping's supervisor, and stops it when the mapping is
disabled, changed or deleted. What it does while it runs:

- :meth:`PushedSource.serving` is entered for as long as the mapping runs: register what the
  front-end serves there (``ingress.listener.add_route(...)`` / ``add_target(...)``, each a
  context manager) so that a mapping that stops stops being served;
- the retries an event used, and when its next one is due, are kept with it in the queue
  (:meth:`PushedSource.attempted`): a restart does not give it its retries again;
- events the front-end accepts asynchronously are committed to the durable queue with the
  mapping as their target (``await ingress.queue.enqueue(self.context.mapping, event)``
  before answering), and reach the mapping's pipeline from there: :meth:`PushedSource.run`
  claims them from the queue while the mapping runs (on every replica; each event is
  claimed by one at a time), ``ack`` deletes them once delivered (retries, maximum event
  age, destinations as the mapping says); the event the function receives is the payload
  exactly as queued. A synchronous front-end (function URLs) invokes the function itself
  through ``ingress.functions`` and puts nothing into the sink.

``run`` raises :class:`~router.errors.ConfigError` (the mapping stops, saying why) when the
router has no ``router.ingress`` configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from router.abc import Sink, Source, SourceContext
from router.backoff import LambdaAsyncRetry
from router.errors import ConfigError
from router.ingress import AsyncQueue, Ingress, mapping_target
from router.models import Record


class PushedSource(Source):
    """A source fed by the ingress listener; see the module's docstring."""

    _queue: AsyncQueue | None = None
    _claimed: set[str]

    def __init__(self, settings: Any, context: SourceContext) -> None:
        super().__init__(settings, context)
        self._claimed = set()
        """Ids of the queued events this source claimed and did not acknowledge yet."""

    def serving(self, ingress: Ingress, sink: Sink) -> AbstractAsyncContextManager[Any]:
        """Entered while the mapping runs: register routes and actions here. Defaults to
        nothing. An error raised on entering it restarts the source with backoff (a
        :class:`ConfigError`, such as a path another mapping serves, stops the mapping)."""
        return contextlib.nullcontext()

    def ingress(self) -> Ingress:
        """The router's ingress, or a ConfigError saying how to configure it."""
        ingress = self.context.ingress
        if ingress is None:
            mapping = self.context.mapping
            raise ConfigError(
                f"mapping {mapping.name}: source type {mapping.source.type!r} takes events "
                "pushed to the ingress listener, which is not configured: add "
                "router.ingress (e.g. listen: 127.0.0.1:9000) to the configuration"
            )
        return ingress

    def async_retry(self) -> LambdaAsyncRetry | None:
        """Lambda's retry timing, scaled by ``router.ingress.retry_delay_scale``: the queue
        holds Lambda's asynchronous invocations (a front-end with another retry policy, such
        as an EventBridge rule's, returns None)."""
        ingress = self.context.ingress
        scale = 1.0 if ingress is None else ingress.settings.retry_delay_scale
        return LambdaAsyncRetry(scale=scale)

    def queue_target(self) -> str:
        """The queue target whose events this source delivers: its mapping's."""
        return mapping_target(self.context.mapping)

    async def run(self, sink: Sink) -> None:
        ingress = self.ingress()
        self._queue = ingress.queue
        async with self.serving(ingress, sink):
            sink.supervisor.working()
            await ingress.queue.consume(self.queue_target(), sink, self._claimed)

    def build_event(self, records: Sequence[Record]) -> Any:
        """The event exactly as the front-end accepted it (one per invocation)."""
        return records[0].data

    async def ack(self, records: Sequence[Record]) -> None:
        """Delete the delivered events from the queue."""
        assert self._queue is not None  # records come from run()
        await self._queue.ack(records)
        self._claimed.difference_update(r.identifier for r in records)

    async def attempted(self, record: Record, retry_at: float | None) -> None:
        """Remember the retries the event used, and when it is due, in the queue."""
        assert self._queue is not None  # records come from run()
        await self._queue.note_attempt(record.position, record.attempts, retry_at)

    async def aclose(self) -> None:
        """The mapping stopped: what it claimed and did not deliver may be claimed again at
        once (by any replica)."""
        claimed, self._claimed = self._claimed, set()
        if claimed and self._queue is not None:
            await self._queue.release(claimed)


__all__ = ["PushedSource"]
