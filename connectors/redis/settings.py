"""Settings of the Redis Streams source and destination: the ``source:`` block of a
``type: redis`` mapping and a ``redis`` destination, validated at the YAML boundary."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.models import PluginSettings
from router.secrets import Secret

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]


def describe(error: BaseException) -> str:
    """A Redis client error in one line (``ConnectionError: ...``)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RedisConnection(PluginSettings):
    """Server address, credentials and TLS, shared by the source and the destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)
    """``redis://HOST:PORT/DB`` or ``rediss://`` (TLS); without a password in it."""
    username: str | None = None
    password: Secret | None = None
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    socket_timeout: float = Field(default=10.0, gt=0)
    """Seconds a command may take (a blocking read waits ``block`` on top of it)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"expected redis://HOST:PORT/DB or rediss://..., got {value!r}")
        if parts.password:
            raise ValueError(
                "the url must not hold a password: write it as password: ${NAME} (or {file: PATH})"
            )
        return value

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "rediss"

    @property
    def address(self) -> str:
        """The url without a user name, as the event's ``url``."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_timeout,
        }
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password.reveal()
        if self.tls:
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_ca_certs:
                kwargs["ssl_ca_certs"] = self.ssl_ca_certs
            if self.ssl_certfile:
                kwargs["ssl_certfile"] = self.ssl_certfile
            if self.ssl_keyfile:
                kwargs["ssl_keyfile"] = self.ssl_keyfile
        return kwargs


class RedisSourceSettings(RedisConnection):
    """The ``source:`` block of a ``type: redis`` mapping (minus ``type``)."""

    streams: list[str] = Field(min_length=1)
    group: str | None = None
    """The consumer group; defaults to the mapping's uuid (its name before it has one)."""
    consumer: str | None = None
    """This replica's consumer name in the group; defaults to the replica id."""
    starting_position: StartingPosition | None = None
    """Overrides the mapping-level ``starting_position`` when given here."""
    starting_position_timestamp: datetime | None = None
    data_field: str = Field(default="data", min_length=1)
    """The entry field that becomes the record's base64 ``data`` (what filters decode)."""
    key_field: str | None = None
    """The entry field whose value picks the lane within a stream when the mapping's
    ``parallelization_factor`` is above 1."""
    claim_idle: float = Field(default=60.0, ge=1)
    """Seconds an entry delivered to another consumer may stay unacknowledged and untouched
    before this consumer claims it (``XAUTOCLAIM``): that consumer is taken for dead. A
    live consumer touches its unacknowledged entries every ``claim_idle / 4`` seconds."""
    claim_interval: float = Field(default=5.0, gt=0)
    """Seconds between two looks for entries to take over from dead consumers."""
    block: float = Field(default=1.0, gt=0, le=30)
    """Seconds one ``XREADGROUP`` waits for new entries."""
    read_count: int = Field(default=1_000, ge=1, le=100_000)
    """Most entries one read asks for (fewer when the mapping has less room)."""
    metrics_interval: float = Field(default=10.0, gt=0)
    """Seconds between two readings of the group's pending count and lag."""

    @field_validator("streams", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> RedisSourceSettings:
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs starting_position_timestamp")
        if self.block >= self.socket_timeout:
            raise ValueError("block must be lower than socket_timeout")
        if len(set(self.streams)) != len(self.streams):
            raise ValueError("streams: each stream may be named once")
        return self


class RedisDestinationSettings(RedisConnection):
    """A ``redis`` on-failure / on-success destination: ``XADD`` of one entry per record,
    the JSON record in ``field``."""

    stream: str = Field(min_length=1)
    field: str = Field(default="data", min_length=1)
    maxlen: int | None = Field(default=None, ge=1)
    """Trim the stream to about this many entries (``XADD MAXLEN ~``); None keeps all."""
