"""The ``http`` invoker: the Lambda Invoke API over HTTP.

``POST {url}/2015-03-31/functions/{name}/invocations`` with the event as the JSON body and
``X-Amz-Invocation-Type: RequestResponse``, as the AWS SDKs send it. Works against the AWS
Lambda Runtime Interface Emulator, LocalStack, and any Lambda-compatible endpoint.

How a response is classified:

========================================  ====================================================
200 + ``X-Amz-Function-Error``            function error; payload = the decoded error object
200                                       success; payload = the decoded body (``None`` when
                                          empty, the raw text when it is not JSON)
429 / ``TooManyRequestsException``        throttled; ``retry_after`` from ``Retry-After`` (or
                                          the body's ``retryAfterSeconds``)
5xx, other 4xx, connection errors         transport error (the function did not answer);
                                          ``status_code`` tells them apart
no answer by the invocation's deadline    timeout
========================================  ====================================================
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from pydantic import ConfigDict, Field, field_validator

from router.abc import Invoker, InvokerContext, SettingsProblem
from router.invokers.results import (
    decode_payload,
    describe_error,
    success,
    throttled,
    timeout_result,
    transport_error,
)
from router.models import FunctionConfig, Invocation, InvokeResult, Outcome, PluginSettings
from router.secrets import Secret, SecretUrl, plain_headers, redact

logger = logging.getLogger(__name__)

INVOKE_PATH = "/2015-03-31/functions/{name}/invocations"
_THROTTLE_TYPES = frozenset({"TooManyRequestsException", "EC2ThrottledException"})


class HttpInvokerSettings(PluginSettings):
    """YAML keys of ``invoker: http``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretUrl
    """Base URL of the Invoke API, e.g. ``http://127.0.0.1:9000`` (the emulator's port); a
    password in it is written as a reference (``https://user:${PASSWORD}@host``)."""
    function_name: str | None = None
    """The name (or ARN) the endpoint knows the function by; defaults to our function name.
    The Runtime Interface Emulator accepts ``function``."""
    qualifier: str | None = None
    """Version or alias, sent as ``?Qualifier=``."""
    headers: dict[str, Secret] = Field(default_factory=dict)
    """Extra request headers (e.g. ``Authorization``); values are kept out of logs, and those
    of credential headers are references in a YAML file."""
    max_connections: int = Field(default=100, ge=1, le=10_000)
    connect_timeout: float = Field(default=10.0, gt=0, le=900)

    @field_validator("headers", mode="before")
    @classmethod
    def _plain_headers(cls, value: Any) -> Any:
        return plain_headers(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: SecretUrl) -> SecretUrl:
        check_http_url(value)
        return value


def check_http_url(url: SecretUrl) -> None:
    """Raise ValueError unless ``url`` is an http(s) URL (checked once a whole-URL reference
    is resolved)."""
    text = url.text
    if text is not None and not text.strip().startswith(("http://", "https://")):
        raise ValueError("url must start with http:// or https://")


def auth_header_clash(url: SecretUrl, headers: Mapping[str, object]) -> str | None:
    """The ``Authorization`` header's key in ``headers`` (as written) when ``url`` also has
    credentials: aiohttp refuses to send such a request."""
    if "@" not in urlsplit(url.text or "").netloc:
        return None
    return next((key for key in headers if key.lower() == "authorization"), None)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_type(response: aiohttp.ClientResponse, payload: Any) -> str:
    # AWS puts the exception name in x-amzn-ErrorType ("Name:http://..."), in the body's
    # "__type"/"Type", or both.
    header = response.headers.get("x-amzn-ErrorType", "")
    if header:
        return header.split(":", 1)[0]
    if isinstance(payload, dict):
        name = payload.get("__type") or payload.get("errorType") or ""
        return str(name).rsplit("#", 1)[-1]
    return ""


class HttpInvoker(Invoker):
    """Invokes a function through a Lambda-compatible Invoke API endpoint."""

    Settings: ClassVar[type[PluginSettings]] = HttpInvokerSettings
    settings: HttpInvokerSettings

    @classmethod
    def check(cls, function: FunctionConfig) -> list[SettingsProblem]:
        """aiohttp refuses every request that has both credentials in the URL and an
        ``Authorization`` header."""
        settings = function.settings
        assert isinstance(settings, HttpInvokerSettings)
        header = auth_header_clash(settings.url, settings.headers)
        if header is None:
            return []
        return [
            SettingsProblem(
                ("headers", header),
                "the url has credentials (user:password@) and an Authorization header is set "
                "too; the HTTP client refuses such requests: keep one of them",
            )
        ]

    def __init__(self, function: FunctionConfig, context: InvokerContext) -> None:
        super().__init__(function, context)
        settings = self.settings
        name = quote(settings.function_name or function.name, safe="")
        self.endpoint = settings.url.reveal().strip().rstrip("/") + INVOKE_PATH.format(name=name)
        self._params = {"Qualifier": settings.qualifier} if settings.qualifier else None
        self._headers = {
            "Content-Type": "application/json",
            "X-Amz-Invocation-Type": "RequestResponse",
            "X-Amz-Log-Type": "None",
            **{k: v.reveal() for k, v in settings.headers.items()},
        }
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self.settings.max_connections)
        # Only the invocation deadline bounds a call; the connect timeout tells an endpoint
        # that is unreachable (a transport error) from a function that is slow (a timeout).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, raise_for_status=False
        )

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        session = self._session
        if session is None:
            raise RuntimeError("HttpInvoker.invoke() called before start()")
        remaining = invocation.deadline - time.time()
        if remaining <= 0:
            return timeout_result(invocation.request_id, self.function.timeout)
        body = orjson.dumps(invocation.event)
        timer = asyncio.timeout(remaining)
        try:
            async with (
                timer,
                session.post(
                    self.endpoint, data=body, headers=self._headers, params=self._params
                ) as response,
            ):
                raw = await response.read()
                return self._classify(response, raw)
        except TimeoutError as e:
            if timer.expired():
                return timeout_result(invocation.request_id, self.function.timeout)
            return transport_error(self._describe(e))
        except (aiohttp.ClientError, OSError) as e:
            return transport_error(self._describe(e))

    def _describe(self, exc: BaseException) -> str:
        reason = str(exc) or type(exc).__name__
        return redact(f"{self.endpoint}: {type(exc).__name__}: {reason}")

    def _classify(self, response: aiohttp.ClientResponse, raw: bytes) -> InvokeResult:
        status = response.status
        payload = decode_payload(raw)
        if 200 <= status < 300:
            version = response.headers.get("X-Amz-Executed-Version", "$LATEST")
            error = response.headers.get("X-Amz-Function-Error")
            if error:
                return InvokeResult(
                    outcome=Outcome.FUNCTION_ERROR,
                    payload=payload,
                    status_code=status,
                    function_error=error,
                    executed_version=version,
                    detail=describe_error(payload),
                )
            if version == "$LATEST":
                return success(payload)
            return InvokeResult(
                outcome=Outcome.SUCCESS,
                payload=payload,
                status_code=status,
                executed_version=version,
            )
        error_type = _error_type(response, payload)
        detail = f"HTTP {status} from {self.endpoint}"
        if error_type:
            detail += f": {error_type}"
        if isinstance(payload, dict):
            message = (
                payload.get("message") or payload.get("Message") or payload.get("errorMessage")
            )
            if message:
                detail += f": {message}"
        detail = redact(detail)
        if status == 429 or error_type in _THROTTLE_TYPES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is None and isinstance(payload, dict):
                retry_after = parse_retry_after(str(payload.get("retryAfterSeconds") or ""))
            return throttled(detail, retry_after, status, payload)
        return transport_error(detail, status, payload)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
