"""The ``http`` source: a function URL on the ingress listener.

Each mapping serves ``methods`` at ``path`` while it runs; a request is turned into the
payload format 2.0 event (:func:`connectors.function_url.payload.build_event`), the function
is invoked synchronously through its invoker, and its result becomes the HTTP answer
(:func:`connectors.function_url.payload.answer_from_result`). Nothing goes through the
mapping's pipeline or the queue: like a function URL, the caller waits for the function.

How an invocation that did not succeed is answered (as function URLs do): a function error,
a timeout, an unreachable invoker or a result that is no valid response: 502; a throttle:
429. With ``auth_type: AWS_IAM`` the route needs a SigV4 signature for ``lambda`` when the
listener has credentials configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from aiohttp import web
from multidict import CIMultiDict
from pydantic import AliasChoices, ConfigDict, Field, field_validator

from connectors.function_url.cors import CorsSettings
from connectors.function_url.payload import (
    HttpAnswer,
    HttpRequestView,
    InvalidResponse,
    answer_from_result,
    build_event,
)
from router.abc import Sink, SourceTraits
from router.errors import ConfigError
from router.ingress import Ingress, IngressRequest
from router.ingress.errors import AwsError
from router.ingress.listener import check_path
from router.ingress.source import PushedSource
from router.models import Invocation, Outcome, PluginSettings, SourceKind, current_account

logger = logging.getLogger(__name__)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
"""What ``methods: ["*"]`` (the default) stands for."""


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class FunctionUrlSettings(PluginSettings):
    """YAML keys of ``source: {type: http}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(validation_alias=_alias("path", "Path"))
    """``/hello`` or a pattern: ``/users/{id}`` (one segment), ``/files/{proxy+}`` (the
    rest); pattern values reach the function as ``pathParameters``."""
    methods: tuple[str, ...] = Field(default=("*",), validation_alias=_alias("methods", "Method"))
    payload_format_version: Literal["2.0"] = Field(
        default="2.0", validation_alias=_alias("payload_format_version", "PayloadFormatVersion")
    )
    """The event's format: 2.0 (function URLs and HTTP APIs); 1.0 is not produced."""
    auth_type: Literal["NONE", "AWS_IAM"] = Field(
        default="NONE", validation_alias=_alias("auth_type", "AuthType")
    )
    cors: CorsSettings | None = Field(default=None, validation_alias=_alias("cors", "Cors"))
    account: str = Field(default_factory=current_account, pattern=r"^\d{12}$")
    """``requestContext.accountId``."""

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        check_path(value)
        return value

    @field_validator("payload_format_version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, float | int) else value

    @field_validator("methods", mode="before")
    @classmethod
    def _one_method(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one method, or '*' for all")
        out: list[str] = []
        for method in value:
            upper = method.upper()
            if upper in ("*", "ANY"):
                out.extend(METHODS)
            elif upper in METHODS:
                out.append(upper)
            else:
                raise ValueError(f"unknown method {method!r}; use {', '.join(METHODS)} or '*'")
        return tuple(dict.fromkeys(out))


class FunctionUrlSource(PushedSource):
    """A function URL: see the module's docstring."""

    Settings = FunctionUrlSettings
    traits = SourceTraits(
        kind=SourceKind.ASYNC,
        batch_size_default=1,
        batch_size_max=1,
        retry_default=0,
        retry_min=0,
        retry_max=0,
        record_age_default=21600,
        record_age_min=60,
        record_age_max=21600,
        supports=frozenset(),
    )

    settings: FunctionUrlSettings

    def serving(self, ingress: Ingress, sink: Sink) -> AbstractAsyncContextManager[Any]:
        settings = self.settings
        methods = set(settings.methods)
        if settings.cors is not None:
            methods.add("OPTIONS")  # preflight requests

        @contextlib.asynccontextmanager
        async def served() -> AsyncIterator[None]:
            try:
                registration = ingress.listener.add_route(
                    methods,
                    settings.path,
                    lambda request: self.handle(ingress, request),
                    owner=f"mapping {self.context.mapping.name}",
                    signed=settings.auth_type == "AWS_IAM",
                    service="lambda",
                )
            except ConfigError as e:
                raise ConfigError(f"mapping {self.context.mapping.name}: {e}") from None
            with registration:
                yield

        return served()

    async def handle(self, ingress: Ingress, request: IngressRequest) -> web.StreamResponse:
        http = request.http
        headers = {k.lower(): v for k, v in http.headers.items()}
        cors = self.settings.cors
        if cors is not None and cors.is_preflight(http.method, headers):
            return _response(HttpAnswer(status=200, headers=cors.preflight(headers), body=b""))
        if http.method not in self.settings.methods:
            raise AwsError(404, "UnknownOperationException", f"no operation at {http.method}")
        answer = await self.invoke(ingress, request)
        if cors is not None:
            answer = HttpAnswer(
                status=answer.status,
                headers=cors.apply(answer.headers, headers.get("origin")),
                body=answer.body,
            )
        return _response(answer)

    async def invoke(self, ingress: Ingress, request: IngressRequest) -> HttpAnswer:
        http = request.http
        mapping = self.context.mapping
        invoker = ingress.functions.get(mapping.function)
        function = ingress.functions.config.get(mapping.function)
        if invoker is None or function is None:
            logger.warning("mapping %s: function %s is not running", mapping.name, mapping.function)
            return _status(502, "Internal Server Error")
        event = build_event(
            HttpRequestView(
                method=http.method,
                raw_path=http.raw_path.split("?", 1)[0],
                path=http.path,
                raw_query=http.rel_url.raw_query_string,
                headers=list(http.headers.items()),
                body=request.body,
                source_ip=http.remote or "",
                protocol=f"HTTP/{http.version.major}.{http.version.minor}",
                request_id=request.request_id,
                received=request.received,
                account_id=self.settings.account,
                path_parameters=request.params,
            )
        )
        result = await invoker.invoke(
            Invocation(
                function=mapping.function,
                event=event,
                request_id=request.request_id,
                deadline=time.time() + function.timeout,
                invoked_function_arn=self.context.function_arn,
            )
        )
        if result.outcome is Outcome.SUCCESS:
            try:
                return answer_from_result(result.payload)
            except InvalidResponse as e:
                logger.warning(
                    "mapping %s: function %s returned an invalid response: %s",
                    mapping.name,
                    mapping.function,
                    e,
                )
                return _status(502, "Internal Server Error")
        if result.outcome is Outcome.THROTTLED:
            return _status(429, "Rate Exceeded.")
        return _status(502, "Internal Server Error")

    async def run(self, sink: Sink) -> None:
        # Synchronous: nothing of this mapping is ever queued, so there is nothing to consume.
        ingress = self.ingress()
        async with self.serving(ingress, sink):
            sink.supervisor.working()
            await asyncio.Event().wait()

    def build_event(self, records: Sequence[Any]) -> Any:
        raise NotImplementedError("function URLs invoke synchronously; nothing is queued")


def _status(status: int, message: str) -> HttpAnswer:
    return HttpAnswer(
        status=status,
        headers=[("content-type", "application/json")],
        body=f'{{"Message":"{message}"}}'.encode(),
    )


def _response(answer: HttpAnswer) -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in answer.headers:
        headers.add(name, value)
    return web.Response(status=answer.status, headers=headers, body=answer.body)


__all__ = ["FunctionUrlSettings", "FunctionUrlSource"]
