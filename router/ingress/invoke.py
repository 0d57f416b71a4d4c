"""Lambda's Invoke API on the ingress listener, for every configured function:
``POST /2015-03-31/functions/{name}/invocations``.

- ``X-Amz-Invocation-Type: RequestResponse`` (the default) invokes the function now and
  answers its payload (200), with ``X-Amz-Function-Error`` for a function error and
  ``X-Amz-Executed-Version``;
- ``Event`` commits the event to the asynchronous queue (target ``function:NAME``) and
  answers 202 once it is durable; the function's implicit target delivers it with Lambda's
  asynchronous semantics (:class:`FunctionTargets`);
- ``DryRun`` checks the request (function, payload, signature) and answers 204.

Refusals are Lambda's REST-JSON errors (:func:`router.ingress.errors.rest_json_error`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from router.abc import Destination, Invoker, InvokerContext, SourceContext, SourceTraits
from router.aio import close_logged
from router.app import open_destination
from router.backoff import Backoff
from router.errors import StoreError
from router.ingress.errors import AwsError
from router.ingress.listener import IngressRequest, Registration
from router.ingress.queue import function_target
from router.ingress.source import PushedSource
from router.models import (
    ASYNC_EVENT_AGE_DEFAULT,
    ASYNC_EVENT_AGE_MAX,
    ASYNC_EVENT_AGE_MIN,
    ASYNC_RETRIES_DEFAULT,
    ASYNC_RETRIES_MAX,
    MAX_PAYLOAD_BYTES,
    EventInvokeConfig,
    FunctionConfig,
    Invocation,
    InvokeResult,
    MappingConfig,
    Outcome,
    PluginSettings,
    Record,
    SourceKind,
    SourceSpec,
    function_arn,
)
from router.pipeline import Pipeline

if TYPE_CHECKING:
    from router.functions import Functions
    from router.ingress import Ingress

logger = logging.getLogger(__name__)

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
ASYNC_MAX_BODY = 1024 * 1024
"""Lambda's asynchronous payload limit (1 MB since 2025; 256 KB before)."""
CLIENT_CONTEXT_MAX = 3583
"""Bytes of ``X-Amz-Client-Context`` JSON Lambda takes (before base64)."""
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")
_ARN = re.compile(
    r"^(?:arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:)?(?:\d{12}:)?(?:function:)?"
    r"(?P<name>[a-zA-Z0-9_-]{1,140})(?::(?P<qualifier>[a-zA-Z0-9$_-]{1,128}))?$"
)
ASYNC_TRAITS = SourceTraits(
    kind=SourceKind.ASYNC,
    batch_size_default=1,
    batch_size_max=1,
    retry_default=ASYNC_RETRIES_DEFAULT,
    retry_min=0,
    retry_max=ASYNC_RETRIES_MAX,
    record_age_default=ASYNC_EVENT_AGE_DEFAULT,
    record_age_min=ASYNC_EVENT_AGE_MIN,
    record_age_max=ASYNC_EVENT_AGE_MAX,
    supports=frozenset({"maximum_retry_attempts", "maximum_record_age", "destination_config"}),
)
"""Lambda's asynchronous invocation: 0-2 retries (2), maximum event age 60 s-6 h (6 h)."""


# ---------------------------------------------------------------------- the implicit targets


class InvokeSettings(PluginSettings):
    pass


class InvokeSource(PushedSource):
    """Delivers the asynchronous Invoke calls of one function (target ``function:NAME``):
    the payload as the event, the Invoke's request id as the invocation's (kept across
    retries, as Lambda does), its client context."""

    Settings = InvokeSettings
    traits = ASYNC_TRAITS

    def queue_target(self) -> str:
        return function_target(self.context.mapping.function)

    def invocation_fields(self, records: Sequence[Record]) -> Mapping[str, str]:
        event = records[0].position
        fields = {"request_id": event.id}
        for name in ("client_context", "trace_id"):
            value = event.attributes.get(name)
            if value:
                fields[name] = str(value)
        return fields


class _CurrentInvoker(Invoker):
    """The function's invoker as :class:`Functions` has it at each call (it is replaced when
    the function's definition changes)."""

    Settings = PluginSettings

    def __init__(self, functions: Functions, function: FunctionConfig) -> None:
        context = InvokerContext(store=functions.store, report_init_error=lambda _m: None)
        super().__init__(replace(function, settings=PluginSettings()), context)
        self._functions = functions

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        invoker = self._functions.get(self.function.name)
        if invoker is None:
            return InvokeResult(
                outcome=Outcome.TRANSPORT_ERROR,
                status_code=0,
                detail=f"function {self.function.name} is not declared under functions:",
            )
        return await invoker.invoke(invocation)


def implicit_mapping(function: FunctionConfig) -> MappingConfig:
    """The mapping an asynchronous Invoke of ``function`` is delivered as: its
    ``event_invoke_config`` (Lambda's defaults: 2 retries, 6 hours, no destinations), 10
    invocations at once."""
    settings = function.event_invoke
    return MappingConfig(
        name=f"{function.name} (asynchronous Invoke)",
        uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"router:function:{function.name}")),
        function=function.name,
        source=SourceSpec(type="invoke", settings=InvokeSettings()),
        batch_size=1,
        maximum_retry_attempts=settings.maximum_retry_attempts,
        maximum_record_age=float(settings.maximum_event_age),
        on_failure=settings.on_failure,
        on_success=settings.on_success,
    )


class FunctionTargets:
    """Runs the implicit asynchronous target of each function: a pipeline (the asynchronous
    delivery policy, the function's ``event_invoke_config``) fed by the queue's
    ``function:NAME`` events. Started for every function declared when it starts (events
    left from before a restart are delivered) and for a function added later when its first
    event is queued (:meth:`ensure`); restarted when the function's ``event_invoke_config``
    changes. ``async with`` for the life of the service; leaving drains in-flight deliveries
    up to ``shutdown_timeout``."""

    def __init__(
        self,
        ingress: Ingress,
        *,
        replica_id: str,
        backoff: Backoff | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.ingress = ingress
        self.functions = ingress.functions
        self.replica_id = replica_id
        self.backoff = backoff
        self.shutdown_timeout = shutdown_timeout
        self.pipelines: dict[str, Pipeline] = {}
        self._settings: dict[str, EventInvokeConfig] = {}
        self._destinations: dict[str, list[Destination]] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        self._open = False

    async def __aenter__(self) -> FunctionTargets:
        self._open = True
        self.functions.on_replaced = self._replaced
        for name in list(self.functions.config):
            self.ensure(name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open = False
        self.functions.on_replaced = None
        if self._restarts:
            await asyncio.wait(list(self._restarts))
        for name in list(self.pipelines):
            await self._stop(name)

    async def _stop(self, name: str) -> None:
        pipeline = self.pipelines.pop(name, None)
        self._settings.pop(name, None)
        if pipeline is not None:
            await close_logged(
                lambda: pipeline.stop(self.shutdown_timeout),
                f"the asynchronous Invoke target of {name}",
                logger,
            )
        for destination in self._destinations.pop(name, []):
            what = f"the asynchronous Invoke target of {name}: its {type(destination).__name__}"
            await close_logged(destination.aclose, what, logger)

    def _replaced(self, names: Collection[str]) -> None:
        """Functions were redefined: restart the targets whose settings changed."""
        for name in names:
            function = self.functions.config.get(name)
            running = self._settings.get(name)
            if running is None or function is None or function.event_invoke == running:
                continue
            task = asyncio.create_task(self._restart(name), name=f"restart-target:{name}")
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self, name: str) -> None:
        await self._stop(name)
        self.ensure(name)
        logger.info("the asynchronous Invoke target of %s runs its new event_invoke_config", name)

    def ensure(self, name: str) -> bool:
        """The target of function ``name`` runs (started now if needed); False if no such
        function is declared."""
        if name in self.pipelines:
            return True
        function = self.functions.config.get(name)
        if function is None or not self._open:
            return False
        mapping = implicit_mapping(function)
        store = self.functions.store
        source = InvokeSource(
            InvokeSettings(),
            SourceContext(
                mapping=mapping,
                store=store,
                replica_id=self.replica_id,
                function_arn=function.invoked_arn,
                ingress=self.ingress,
            ),
        )
        opened: list[Destination] = []
        pipeline = Pipeline(
            mapping=mapping,
            function=function,
            source=source,
            invoker=_CurrentInvoker(self.functions, function),
            on_failure=open_destination(store, mapping, mapping.on_failure, opened, name=name),
            on_success=open_destination(store, mapping, mapping.on_success, opened, name=name),
            backoff=self.backoff,
        )
        self.pipelines[name] = pipeline
        self._settings[name] = function.event_invoke
        self._destinations[name] = opened
        pipeline.start()
        return True


# ---------------------------------------------------------------------- the Invoke API


class InvokeApi:
    """Serves the Invoke API on the ingress listener while entered (see the module's
    docstring)."""

    def __init__(self, ingress: Ingress, targets: FunctionTargets) -> None:
        self.ingress = ingress
        self.targets = targets
        self._registration: Registration | None = None

    async def __aenter__(self) -> InvokeApi:
        self._registration = self.ingress.listener.add_route(
            "POST", INVOKE_PATH, self.handle, owner="the Invoke API", service="lambda"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._registration is not None:
            self._registration.remove()
            self._registration = None

    def _function(self, request: IngressRequest) -> FunctionConfig:
        raw = request.params["name"]
        found = _ARN.match(raw)
        qualifier = request.http.query.get("Qualifier")
        function = None
        if found is not None:
            function = self.ingress.functions.config.get(found["name"])
            qualifier = qualifier or found["qualifier"]
        if function is None or qualifier not in (None, "", "$LATEST"):
            name = found["name"] if found is not None else raw
            if function is None:
                known = next(iter(self.ingress.functions.config.values()), None)
                arn = function_arn(name, account=known.account_id if known else None)
            else:
                arn = function.invoked_arn
            suffix = f":{qualifier}" if qualifier else ""
            raise AwsError(404, "ResourceNotFoundException", f"Function not found: {arn}{suffix}")
        return function

    async def handle(self, request: IngressRequest) -> web.StreamResponse:
        headers = request.http.headers
        kind = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if kind not in INVOCATION_TYPES:
            raise AwsError(
                400,
                "InvalidParameterValueException",
                f"1 validation error detected: Value '{kind}' at 'invocationType' failed to "
                "satisfy constraint: Member must satisfy enum value set: "
                "[Event, RequestResponse, DryRun]",
            )
        function = self._function(request)
        body = request.body
        limit = ASYNC_MAX_BODY if kind == "Event" else MAX_PAYLOAD_BYTES
        if len(body) > limit:
            raise AwsError(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
            )
        payload = _payload(body)
        client_context = _client_context(headers.get("X-Amz-Client-Context"))
        trace_id = headers.get("X-Amzn-Trace-Id", "")
        if kind == "DryRun":
            return web.Response(status=204)
        if kind == "Event":
            return await self._queue(request, function, payload, client_context, trace_id)
        return await self._invoke(request, function, payload, client_context, trace_id)

    async def _queue(
        self,
        request: IngressRequest,
        function: FunctionConfig,
        payload: bytes,
        client_context: str,
        trace_id: str,
    ) -> web.StreamResponse:
        attributes = {}
        if client_context:
            attributes["client_context"] = client_context
        if trace_id:
            attributes["trace_id"] = trace_id
        self.targets.ensure(function.name)
        try:
            await self.ingress.queue.enqueue(
                function.name, payload, attributes=attributes, event_id=request.request_id
            )
        except StoreError as e:
            logger.warning(
                "asynchronous Invoke of %s refused, the store did not take it: %s",
                function.name,
                e,
            )
            raise AwsError(
                503 if e.retriable else 500,
                "ServiceException",
                "The event could not be queued; try again.",
            ) from e
        return web.Response(status=202)

    async def _invoke(
        self,
        request: IngressRequest,
        function: FunctionConfig,
        payload: bytes,
        client_context: str,
        trace_id: str,
    ) -> web.StreamResponse:
        invoker = self.ingress.functions.get(function.name)
        if invoker is None:
            raise AwsError(
                404,
                "ResourceNotFoundException",
                f"Function not found: {function.invoked_arn}",
            )
        invocation = Invocation(
            function=function.name,
            event=orjson.loads(payload),
            request_id=request.request_id,
            deadline=time.time() + function.timeout,
            invoked_function_arn=function.invoked_arn,
            trace_id=trace_id,
            client_context=client_context,
        )
        result = await invoker.invoke(invocation)
        return _answer(result)


def _payload(body: bytes) -> bytes:
    """The request's payload as JSON (an empty body is ``{}``, as Lambda takes it)."""
    if not body.strip():
        return b"{}"
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise AwsError(
            400,
            "InvalidRequestContentException",
            f"Could not parse request body into json: {e}",
        ) from None
    return body


def _client_context(header: str | None) -> str:
    """``X-Amz-Client-Context`` (base64 JSON) as JSON text, or 400 as Lambda answers."""
    if not header:
        return ""
    try:
        text = base64.b64decode(header, validate=True)
        value = orjson.loads(text)
    except (binascii.Error, orjson.JSONDecodeError, ValueError):
        raise AwsError(
            400,
            "InvalidRequestContentException",
            "Client context must be a valid Base64-encoded JSON object.",
        ) from None
    if not isinstance(value, dict):
        raise AwsError(
            400,
            "InvalidRequestContentException",
            "Client context must be a valid Base64-encoded JSON object.",
        )
    if len(text) > CLIENT_CONTEXT_MAX:
        raise AwsError(
            400,
            "InvalidParameterValueException",
            f"Client context must be at most {CLIENT_CONTEXT_MAX} bytes of JSON.",
        )
    return text.decode()


def _answer(result: InvokeResult) -> web.StreamResponse:
    """The synchronous Invoke's answer for ``result``."""
    if result.outcome is Outcome.THROTTLED:
        headers = {}
        if result.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(result.retry_after)))
        raise AwsError(
            429,
            "TooManyRequestsException",
            "Rate Exceeded.",
            extra={"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"},
            headers=headers,
        )
    if result.outcome is Outcome.TRANSPORT_ERROR:
        raise AwsError(
            502,
            "ServiceException",
            f"The function could not be reached: {result.detail or 'no answer'}",
        )
    headers = {"X-Amz-Executed-Version": result.executed_version or "$LATEST"}
    body = b"null" if result.payload is None else orjson.dumps(result.payload)
    if result.outcome is not Outcome.SUCCESS:
        headers["X-Amz-Function-Error"] = result.function_error or "Unhandled"
    elif len(body) > MAX_PAYLOAD_BYTES:
        headers["X-Amz-Function-Error"] = "Unhandled"
        body = orjson.dumps(
            {
                "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum "
                f"allowed payload size ({MAX_PAYLOAD_BYTES} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
        )
    return web.Response(status=200, body=body, headers=headers, content_type="application/json")


__all__ = [
    "ASYNC_MAX_BODY",
    "INVOKE_PATH",
    "FunctionTargets",
    "InvokeApi",
    "InvokeSource",
    "implicit_mapping",
]
