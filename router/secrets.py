"""Secrets that never print: passwords, keys, tokens, URLs with credentials."""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import core_schema

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@"
)
_QUERY_SECRET = re.compile(
    r"(?i)(?P<key>(?:password|passwd|pwd|secret|token|access_key|secret_key|api_key|apikey|"
    r"sig|signature|x-amz-signature|x-amz-security-token|sasl_plain_password)=)(?P<val>[^&\s]+)"
)


class Secret:
    """A value whose ``repr`` and ``str`` are ``***``; call :meth:`reveal` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def to_secret(value: Any) -> Secret:
            return value if isinstance(value, Secret) else Secret(str(value))

        return core_schema.no_info_plain_validator_function(
            to_secret,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.reveal(), when_used="json"
            ),
            json_schema_input_schema=core_schema.str_schema(),
        )


def redact(text: str) -> str:
    """Remove credentials from URLs and ``key=value`` secrets in free text (logs, errors)."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}***", text)
