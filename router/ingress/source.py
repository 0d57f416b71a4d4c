"""The base of sources whose events are pushed to the ingress listener (``eventbridge``,
``sns``, ``http``) instead of read by polling.

A pushed source is a :class:`~router.abc.Source` like any other: the router starts one per
mapping (on every replica), under the mapping's supervisor, and stops it when the mapping is
disabled, changed or deleted. What it does while it runs:

- :meth:`PushedSource.serving` is entered for as long as the mapping runs: register what the
  front-end serves there (``ingress.listener.add_route(...)`` / ``add_target(...)``, each a
  context manager) so that a mapping that stops stops being served;
- events the front-end accepts asynchronously are committed to the durable queue with the
  mapping as their target, and reach the mapping's pipeline from there (retries, maximum
  event age, destinations as the mapping says); a synchronous front-end (function URLs)
  invokes the function itself through ``ingress.functions`` and puts nothing into the sink.

``run`` raises :class:`~router.errors.ConfigError` (the mapping stops, saying why) when the
router has no ``router.ingress`` configured.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from router.abc import Sink, Source
from router.errors import ConfigError
from router.ingress import Ingress
from router.models import Record


class PushedSource(Source):
    """A source fed by the ingress listener; see the module's docstring."""

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

    async def run(self, sink: Sink) -> None:
        ingress = self.ingress()
        async with self.serving(ingress, sink):
            sink.supervisor.working()
            await asyncio.Event().wait()

    def build_event(self, records: Sequence[Record]) -> Any:
        """The event exactly as the front-end accepted it (one per invocation)."""
        return records[0].data

    async def ack(self, records: Sequence[Record]) -> None:
        """Nothing to forget: pushed events are not read from anywhere."""


__all__ = ["PushedSource"]
