"""What every AWS connector shares: connection settings, the aioboto3 session, client
configuration, ARN helpers and the classification of botocore errors. aioboto3 is imported
where a client is made: the connectors' classes and settings import without it (``router
validate`` and ``router schema`` on an installation without the ``aws`` extra).

Credentials come from the usual AWS chain (environment, shared config / profile, container or
instance role) unless the settings carry ``aws_access_key_id`` / ``aws_secret_access_key``.
They are held as :class:`router.secrets.Secret` and never logged. An ``endpoint_url`` points
the clients at an emulator (moto, LocalStack, ElasticMQ); botocore's own ``AWS_ENDPOINT_URL``
and ``AWS_ENDPOINT_URL_<SERVICE>`` environment variables work too.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from router.models import PluginSettings
from router.secrets import Secret, redact

DEFAULT_REGION = "us-east-1"

# Error codes that mean "try again later" rather than "this request is wrong".
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestThrottledException",
    }
)

AWS_REQUIRES: dict[str, str] = {"aioboto3": "aws"}
"""The ``requires`` of every AWS connector: the library and its pip extra."""


def _botocore_errors() -> tuple[type[BaseException], ...]:
    """botocore's ``(BotoCoreError, ClientError)``; none without botocore (then no AWS
    client runs: ``router run`` stops first, naming the ``aws`` extra)."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ModuleNotFoundError:
        return ()
    return (BotoCoreError, ClientError)


_BOTOCORE_ERRORS = _botocore_errors()
_CLIENT_ERROR = _BOTOCORE_ERRORS[1:]
AWS_ERRORS: tuple[type[BaseException], ...] = (*_BOTOCORE_ERRORS, OSError)
"""What a failed botocore call raises: a service answer, or a connection / timeout problem."""

QUEUE_MISSING_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


class AwsSettings(PluginSettings):
    """Connection settings shared by the AWS sources, destinations and the Lambda invoker."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    aws_access_key_id: Secret | None = None
    aws_secret_access_key: Secret | None = None
    aws_session_token: Secret | None = None
    max_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts per API call, the first included (botocore's standard retry mode), before
    the router's own backoff takes over."""

    @model_validator(mode="after")
    def _keys_come_in_pairs(self) -> AwsSettings:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "set both aws_access_key_id and aws_secret_access_key, or neither "
                "(to use the AWS credential chain: environment, profile, role)"
            )
        return self


def make_session(settings: AwsSettings) -> Any:
    """One aioboto3 session for one source / destination / invoker."""
    import aioboto3

    kwargs: dict[str, Any] = {}
    if settings.aws_access_key_id is not None and settings.aws_secret_access_key is not None:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id.reveal()
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.reveal()
        if settings.aws_session_token is not None:
            kwargs["aws_session_token"] = settings.aws_session_token.reveal()
    if settings.profile:
        kwargs["profile_name"] = settings.profile
    region = settings.region or env_region()
    if region:
        kwargs["region_name"] = region
    return aioboto3.Session(**kwargs)


def client_config(
    settings: AwsSettings,
    *,
    read_timeout: float = 30.0,
    pool: int = 20,
    connect_timeout: float = 5.0,
) -> Any:
    """botocore client configuration: bounded standard retries, a read timeout longer than a
    long poll, and a connection pool wide enough for parallel receives and deletes."""
    from botocore.config import Config

    return Config(
        retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=pool,
    )


def env_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def region_for(settings: AwsSettings, *hints: str | None) -> str:
    """The region: configured, else read from an ARN / AWS endpoint host, else the
    environment, else ``us-east-1``."""
    if settings.region:
        return settings.region
    for hint in hints:
        region = region_from(hint)
        if region:
            return region
    return env_region() or DEFAULT_REGION


def region_from(value: str | None) -> str | None:
    """The region in an ARN (``arn:aws:sqs:REGION:...``) or an AWS host
    (``sqs.REGION.amazonaws.com``); None for emulator URLs."""
    if not value:
        return None
    if value.startswith("arn:"):
        parts = value.split(":")
        return parts[3] or None if len(parts) > 3 else None
    host = urlsplit(value).hostname or ""
    labels = host.split(".")
    if host.endswith(".amazonaws.com") and len(labels) >= 4:
        return labels[1]
    return None


def queue_arn_from_url(queue_url: str, region: str) -> str:
    """``arn:aws:sqs:REGION:ACCOUNT:NAME`` for a queue URL ``http(s)://host/ACCOUNT/NAME``."""
    path = urlsplit(queue_url).path.strip("/").split("/")
    if len(path) < 2:
        raise ValueError(f"not an SQS queue URL (expected .../ACCOUNT/NAME): {queue_url!r}")
    return f"arn:aws:sqs:{region}:{path[-2]}:{path[-1]}"


def parse_arn(arn: str, service: str) -> tuple[str, str, str]:
    """``(region, account, resource)`` of ``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE``."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != service:
        raise ValueError(f"not an {service} ARN (arn:aws:{service}:REGION:ACCOUNT:NAME): {arn!r}")
    return parts[3], parts[4], parts[5]


def error_code(exc: BaseException) -> str:
    if isinstance(exc, _CLIENT_ERROR):
        return str(exc.response.get("Error", {}).get("Code", ""))  # type: ignore[attr-defined]
    return ""


def http_status(exc: BaseException) -> int:
    if isinstance(exc, _CLIENT_ERROR):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)  # type: ignore[attr-defined]
        return int(status or 0)
    return 0


def is_throttle(exc: BaseException) -> bool:
    return error_code(exc) in _THROTTLING_CODES or http_status(exc) == 429


def is_aws_error(exc: BaseException) -> bool:
    """Errors raised by botocore for a failed call (service answer or connection problem)."""
    return isinstance(exc, AWS_ERRORS)


def describe(exc: BaseException) -> str:
    """A short, credential-free description of a botocore error for logs and messages."""
    code = error_code(exc)
    if code:
        message = str(exc.response.get("Error", {}).get("Message", ""))  # type: ignore[attr-defined]
        text = f"{code}: {message}" if message else code
    else:
        text = f"{type(exc).__name__}: {exc}"
    return redact(text)[:300]


async def run_all(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` together until one fails (its error is raised, the others cancelled) or
    the caller is cancelled (all are cancelled). A plain ``TaskGroup`` would wrap the error
    in an ExceptionGroup, which the router's retry loop does not look into."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
