"""Ingress: pushed events. One listener (:mod:`router.ingress.listener`) serves every
front-end; asynchronous pushes are committed to the durable queue in the store before they
are answered, and delivered from there.

What a front-end (a pushed source such as ``eventbridge``, ``sns``, ``http``) builds on is
:class:`Ingress`, which the router hands to each source as ``SourceContext.ingress``; the
base class of pushed sources is :class:`router.ingress.source.PushedSource`. See
docs/ingress.md for users and the docstrings named here for the contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from router.config.convert import IngressSettings
from router.ingress.errors import AwsError, json_error, rest_json_error, text_error
from router.ingress.listener import IngressListener, IngressRequest, Registration, Route
from router.ingress.queue import AsyncQueue, function_target, mapping_target

if TYPE_CHECKING:
    from router.functions import Functions


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingress:
    """What pushed sources get from the router (``SourceContext.ingress``).

    - ``listener``: register what the front-end serves while it runs:
      ``listener.add_route(methods, path, handler, owner=..., signed=..., service=...)`` or
      ``listener.add_target("AWSEvents.PutEvents", handler, ...)`` (JSON 1.1 actions posted
      to ``/``); each returns a :class:`Registration` to ``remove()`` (or use as a context
      manager). Handlers take an :class:`IngressRequest` and return an aiohttp response or
      raise :class:`AwsError`.
    - ``functions``: the functions' invokers, for front-ends that invoke synchronously
      (function URLs).
    - ``queue``: the durable asynchronous-invocation queue (:class:`AsyncQueue`). A
      front-end that answers before the function runs (202) commits the event first::

          event_id = await ingress.queue.enqueue(self.context.mapping, event)
          # or a function's implicit target (Invoke with InvocationType=Event):
          event_id = await ingress.queue.enqueue("orders", event, attributes={...})

      ``enqueue`` returns once the event is durable (concurrent calls share one commit) and
      raises :class:`router.errors.StoreError` when the store cannot take it (answer an
      error: nothing was accepted). The events of a mapping reach that mapping's pipeline
      (retries, maximum event age, destinations as the mapping says, Lambda's asynchronous
      semantics) through :class:`router.ingress.source.PushedSource`, which consumes them
      while the mapping runs: a front-end only builds the event its function receives.
    """

    settings: IngressSettings
    listener: IngressListener
    functions: Functions
    queue: AsyncQueue


__all__ = [
    "AsyncQueue",
    "AwsError",
    "Ingress",
    "IngressListener",
    "IngressRequest",
    "IngressSettings",
    "Registration",
    "Route",
    "function_target",
    "json_error",
    "mapping_target",
    "rest_json_error",
    "text_error",
]
