"""The ``lambda`` invoker: AWS Lambda's ``Invoke`` through aioboto3.

Calls real AWS Lambda, or any endpoint speaking the Invoke API when ``endpoint_url`` is set
(LocalStack, the Runtime Interface Emulator behind a proxy, another router's ops port).
botocore retries are off for this client: the router retries throttles and transport errors
itself, with its own backoff and without spending the function-error retry budget.

How an ending is classified:

============================================  ==============================================
``FunctionError`` in the response             function error; payload = the decoded error
                                              object (a ``Sandbox.Timedout`` error, Lambda's
                                              own timeout, is a timeout)
``TooManyRequestsException`` / HTTP 429       throttled (``Retry-After`` honoured)
no answer by the invocation's deadline        timeout
connection errors, 5xx, other service errors  transport error (the function did not run)
============================================  ==============================================
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import orjson
from pydantic import Field

from connectors.aws.common import (
    AWS_ERRORS,
    AWS_REQUIRES,
    AwsSettings,
    client_config,
    describe,
    error_code,
    http_status,
    is_throttle,
    make_session,
    region_for,
)
from router.abc import Invoker, InvokerContext
from router.invokers.results import (
    decode_payload,
    describe_error,
    throttled,
    timeout_result,
    transport_error,
)
from router.models import FunctionConfig, Invocation, InvokeResult, Outcome, PluginSettings

logger = logging.getLogger(__name__)

_LAMBDA_TIMEOUT_TYPES = frozenset({"Sandbox.Timedout"})


class LambdaInvokerSettings(AwsSettings):
    """YAML keys of ``invoker: lambda``."""

    function_name: str | None = None
    """Name, ARN or partial ARN of the Lambda function; defaults to our function's name."""
    qualifier: str | None = None
    """Version or alias."""
    max_connections: int = Field(default=100, ge=1, le=10_000)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPHeaders", {})
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class LambdaInvoker(Invoker):
    """Invokes a function with the AWS Lambda ``Invoke`` API (RequestResponse)."""

    Settings: ClassVar[type[PluginSettings]] = LambdaInvokerSettings
    requires: ClassVar[Mapping[str, str]] = AWS_REQUIRES
    settings: LambdaInvokerSettings

    def __init__(self, function: FunctionConfig, context: InvokerContext) -> None:
        super().__init__(function, context)
        settings = self.settings
        self.function_name = settings.function_name or function.name
        self._session = make_session(settings)
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        if self._client is not None:
            return
        # One attempt per call: the router's backoff handles throttles and outages. The
        # read timeout only backs up the invocation deadline enforced in invoke().
        config = client_config(
            self.settings.model_copy(update={"max_attempts": 1}),
            read_timeout=self.function.timeout + 30,
            pool=self.settings.max_connections,
        )
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(
            self._session.client(
                "lambda",
                endpoint_url=self.settings.endpoint_url,
                region_name=region_for(self.settings, self.function_name),
                config=config,
            )
        )
        self._stack = stack

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        client = self._client
        if client is None:
            raise RuntimeError("LambdaInvoker.invoke() called before start()")
        remaining = invocation.deadline - time.time()
        if remaining <= 0:
            return timeout_result(invocation.request_id, self.function.timeout)
        kwargs: dict[str, Any] = {
            "FunctionName": self.function_name,
            "InvocationType": "RequestResponse",
            "Payload": orjson.dumps(invocation.event),
        }
        if self.settings.qualifier:
            kwargs["Qualifier"] = self.settings.qualifier
        timer = asyncio.timeout(remaining)
        try:
            async with timer:
                response = await client.invoke(**kwargs)
                stream = response.get("Payload")
                raw = await stream.read() if stream is not None else b""
        except TimeoutError as e:
            if timer.expired():
                return timeout_result(invocation.request_id, self.function.timeout)
            return transport_error(self._describe(e))
        except AWS_ERRORS as e:
            return self._classify_error(e)
        return self._classify(response, raw)

    def _describe(self, exc: BaseException) -> str:
        return f"lambda {self.function_name}: {describe(exc)}"

    def _classify_error(self, exc: BaseException) -> InvokeResult:
        detail = self._describe(exc)
        status = http_status(exc)
        payload = getattr(exc, "response", {}).get("Error") or None
        if is_throttle(exc):
            return throttled(detail, _retry_after(exc), status or 429, payload)
        if error_code(exc) and not status:
            status = 500
        return transport_error(detail, status, payload)

    def _classify(self, response: dict[str, Any], raw: bytes) -> InvokeResult:
        status = int(response.get("StatusCode", 200))
        version = str(response.get("ExecutedVersion") or "$LATEST")
        payload = decode_payload(raw)
        error = response.get("FunctionError")
        if error:
            error_type = payload.get("errorType") if isinstance(payload, dict) else None
            outcome = (
                Outcome.TIMEOUT if error_type in _LAMBDA_TIMEOUT_TYPES else Outcome.FUNCTION_ERROR
            )
            return InvokeResult(
                outcome=outcome,
                payload=payload,
                status_code=status,
                function_error=str(error),
                executed_version=version,
                detail=describe_error(payload),
            )
        return InvokeResult(
            outcome=Outcome.SUCCESS, payload=payload, status_code=status, executed_version=version
        )

    async def aclose(self) -> None:
        stack, self._stack = self._stack, None
        self._client = None
        if stack is not None:
            await stack.aclose()
