"""The Lambda-like context object handed to in-process handlers (the ``python`` invoker).

It has the attributes and the method of the context Lambda's Python runtime passes
(``awslambdaric``'s ``LambdaContext``), so handlers that read ``context.aws_request_id`` or
call ``context.get_remaining_time_in_millis()`` run unchanged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

logger = logging.getLogger(__name__)


class CognitoIdentity:
    """``context.identity``: empty unless the invocation came from a mobile SDK."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, identity_id: str | None = None, pool_id: str | None = None) -> None:
        self.cognito_identity_id = identity_id
        self.cognito_identity_pool_id = pool_id

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


_CLIENT_FIELDS = (
    "installation_id",
    "app_title",
    "app_version_name",
    "app_version_code",
    "app_package_name",
)


class Client:
    """``context.client_context.client``: the mobile app that invoked the function."""

    __slots__ = _CLIENT_FIELDS

    def __init__(self, fields: dict[str, Any]) -> None:
        for name in _CLIENT_FIELDS:
            setattr(self, name, fields.get(name))


class ClientContext:
    """``context.client_context``: what the caller sent as ``X-Amz-Client-Context``, with
    the attributes Lambda's Python runtime gives it (``client``, ``custom``, ``env``)."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, fields: dict[str, Any]) -> None:
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = fields.get("custom")
        self.env = fields.get("env")

    @classmethod
    def parse(cls, text: str) -> ClientContext | None:
        """From the JSON text an invocation carries; None when there is none. Text that is
        not a JSON object is ignored (logged), as a runtime cannot use it either."""
        if not text:
            return None
        try:
            fields = orjson.loads(text)
        except orjson.JSONDecodeError:
            fields = None
        if not isinstance(fields, dict):
            logger.warning("ignoring a client context that is not a JSON object: %.100s", text)
            return None
        return cls(fields)


class LambdaContext:
    """What a handler receives as its second argument.

    ``get_remaining_time_in_millis()`` counts down to the invocation's deadline, which the
    invoker enforces: once it reaches 0 the invocation is a timeout.
    """

    __slots__ = (
        "_deadline_ms",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
        "tenant_id",
    )

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        aws_request_id: str,
        deadline: float,
        memory_limit_in_mb: int = 128,
        function_version: str = "$LATEST",
        log_group_name: str = "",
        log_stream_name: str = "",
        client_context: Any = None,
        identity: CognitoIdentity | None = None,
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        # Lambda's runtime exposes the memory size as the string from its environment.
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.aws_request_id = aws_request_id
        self.log_group_name = log_group_name or f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        self.client_context = client_context
        self.identity = identity if identity is not None else CognitoIdentity()
        self.tenant_id: str | None = None
        self._deadline_ms = int(deadline * 1000)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation times out (never negative)."""
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg: object) -> None:
        """Write a line to the function's log (here: the router's log)."""
        logger.info("%s %s", self.aws_request_id, msg)

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},"
            f"log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},"
            f"memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},"
            f"identity={self.identity}])"
        )
