"""Cross-origin resource sharing as function URLs apply it (pure).

With CORS configured, a preflight request (``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``) is answered by the URL itself without invoking the
function, and every other answer to a request whose ``Origin`` is allowed gets
``Access-Control-Allow-Origin`` (and ``-Expose-Headers``, ``-Allow-Credentials``). The
configured headers replace any CORS headers the function returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

_CORS_HEADERS = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-allow-credentials",
        "access-control-max-age",
    }
)


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class CorsSettings(BaseModel):
    """``cors:`` of an ``http`` source, with Lambda's ``Cors`` names and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_origins: tuple[str, ...] = Field(
        default=(), max_length=100, validation_alias=_alias("allow_origins", "AllowOrigins")
    )
    allow_methods: tuple[str, ...] = Field(
        default=(), max_length=6, validation_alias=_alias("allow_methods", "AllowMethods")
    )
    allow_headers: tuple[str, ...] = Field(
        default=(), max_length=100, validation_alias=_alias("allow_headers", "AllowHeaders")
    )
    expose_headers: tuple[str, ...] = Field(
        default=(), max_length=100, validation_alias=_alias("expose_headers", "ExposeHeaders")
    )
    allow_credentials: bool = Field(
        default=False, validation_alias=_alias("allow_credentials", "AllowCredentials")
    )
    max_age: int = Field(default=0, ge=0, le=86400, validation_alias=_alias("max_age", "MaxAge"))

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not 1 <= len(origin) <= 253:
                raise ValueError(f"an origin has 1 to 253 characters, got {origin!r}")
        return value

    @field_validator("allow_methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for method in value:
            if not 1 <= len(method) <= 6:
                raise ValueError(f"a method has 1 to 6 characters, got {method!r}")
        return tuple(m.upper() for m in value)

    @field_validator("allow_headers", "expose_headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for header in value:
            if len(header) > 1024:
                raise ValueError("a header name has at most 1024 characters")
        return value

    def allowed_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin`` (None:
        not allowed)."""
        if not origin:
            return None
        if "*" in self.allow_origins:
            return origin if self.allow_credentials else "*"
        lowered = origin.lower()
        if any(o.lower() == lowered for o in self.allow_origins):
            return origin
        return None

    def is_preflight(self, method: str, headers: Mapping[str, str]) -> bool:
        return (
            method == "OPTIONS"
            and "origin" in headers
            and "access-control-request-method" in headers
        )

    def preflight(self, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The headers of the answer to a preflight request (``headers`` lower-cased)."""
        allowed = self.allowed_origin(headers.get("origin"))
        if allowed is None:
            return []
        out = [("access-control-allow-origin", allowed)]
        if self.allow_methods:
            out.append(("access-control-allow-methods", ",".join(self.allow_methods)))
        if self.allow_headers:
            out.append(("access-control-allow-headers", ",".join(self.allow_headers)))
        if self.allow_credentials:
            out.append(("access-control-allow-credentials", "true"))
        if self.max_age:
            out.append(("access-control-max-age", str(self.max_age)))
        out.append(("vary", "Origin"))
        return out

    def apply(
        self, response_headers: Sequence[tuple[str, str]], origin: str | None
    ) -> list[tuple[str, str]]:
        """``response_headers`` with the function's CORS headers replaced by the configured
        ones for a request from ``origin``."""
        out = [(k, v) for k, v in response_headers if k.lower() not in _CORS_HEADERS]
        allowed = self.allowed_origin(origin)
        if allowed is None:
            return out
        out.append(("access-control-allow-origin", allowed))
        if self.expose_headers:
            out.append(("access-control-expose-headers", ",".join(self.expose_headers)))
        if self.allow_credentials:
            out.append(("access-control-allow-credentials", "true"))
        if not any(k.lower() == "vary" for k, _ in out):
            out.append(("vary", "Origin"))
        return out


__all__ = ["CorsSettings"]
