"""Settings of the NATS JetStream source and destination, validated at the YAML boundary."""

from __future__ import annotations

import re
import ssl
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.models import PluginSettings
from router.secrets import Secret

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def describe(error: BaseException) -> str:
    """A NATS client error in one line."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def consumer_name(name: str) -> str:
    """A durable consumer name from a mapping name: characters NATS refuses in names
    (``.``, ``*``, ``>``, spaces...) become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "router"


class NatsConnection(PluginSettings):
    """Servers, credentials and TLS, shared by the source and the destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: list[str] = Field(min_length=1)
    """``nats://HOST:4222`` (``tls://`` for TLS); a list, or a comma-separated string."""
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    credentials_file: str | None = None
    """A ``.creds`` file (JWT and NKey seed)."""
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    connect_timeout: float = Field(default=5.0, gt=0)
    request_timeout: float = Field(default=5.0, gt=0)
    """Seconds a JetStream API call (consumer info, publish acknowledgement) may take."""
    reconnect_wait: float = Field(default=1.0, gt=0)

    @field_validator("servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("servers")
    @classmethod
    def _no_inline_secrets(cls, value: list[str]) -> list[str]:
        for server in value:
            if "@" in server.split("//", 1)[-1]:
                raise ValueError(
                    f"{server!r}: credentials in a server url are refused: write user: and "
                    "password: ${NAME} (or token: ${NAME})"
                )
        return value

    @property
    def address(self) -> str:
        return ",".join(self.servers)

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "servers": list(self.servers),
            "connect_timeout": self.connect_timeout,
            "reconnect_time_wait": self.reconnect_wait,
            "max_reconnect_attempts": -1,
            "allow_reconnect": True,
        }
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password.reveal()
        if self.token is not None:
            kwargs["token"] = self.token.reveal()
        if self.credentials_file is not None:
            kwargs["user_credentials"] = self.credentials_file
        if (
            self.tls_ca_file
            or self.tls_cert_file
            or any(s.startswith("tls://") for s in self.servers)
        ):
            context = ssl.create_default_context(cafile=self.tls_ca_file)
            if self.tls_cert_file:
                context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
            kwargs["tls"] = context
            if self.tls_hostname:
                kwargs["tls_hostname"] = self.tls_hostname
        return kwargs


class NatsSourceSettings(NatsConnection):
    """The ``source:`` block of a ``type: nats`` mapping (minus ``type``)."""

    stream: str = Field(min_length=1)
    subjects: list[str] = Field(default_factory=list)
    """Subjects the consumer takes (wildcards ``*`` and ``>``); empty: every subject of the
    stream. Several subjects need NATS 2.10 or later."""
    consumer: str | None = None
    """The durable consumer's name; defaults to the mapping's name (characters NATS does
    not allow replaced by ``_``)."""
    create_stream: bool = True
    """Create the stream with ``subjects`` when it does not exist."""
    starting_position: StartingPosition | None = None
    starting_position_timestamp: datetime | None = None
    key_header: str | None = None
    """The header whose value picks the lane within a subject when the mapping's
    ``parallelization_factor`` is above 1."""
    ack_wait: float = Field(default=30.0, ge=1)
    """Seconds the server waits for an acknowledgement before it delivers a message again.
    While the router holds a message it tells the server so every ``ack_wait / 3``."""
    max_deliver: int = Field(default=-1, ge=-1)
    """How often the server delivers a message at most (-1: no limit)."""
    nak_delay: float = Field(default=1.0, ge=0)
    """Seconds after which the server delivers again a message the router gave back
    without delivering it (the mapping stopped, the source failed)."""
    max_ack_pending: int = Field(default=20_000, ge=1)
    """Most messages the consumer has out unacknowledged (all replicas together)."""
    fetch_count: int = Field(default=1_000, ge=1, le=100_000)
    """Most messages one fetch asks for (fewer when the mapping has less room)."""
    fetch_timeout: float = Field(default=1.0, gt=0, le=30)
    """Seconds one fetch waits for messages."""
    metrics_interval: float = Field(default=10.0, gt=0)

    @field_validator("subjects", mode="before")
    @classmethod
    def _split_subjects(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> NatsSourceSettings:
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs starting_position_timestamp")
        if not _NAME.match(self.stream):
            raise ValueError(f"stream {self.stream!r}: a stream name has letters, digits, - and _")
        if self.consumer is not None and not _NAME.match(self.consumer):
            raise ValueError(
                f"consumer {self.consumer!r}: a consumer name has letters, digits, - and _"
            )
        if len(set(self.subjects)) != len(self.subjects):
            raise ValueError("subjects: each subject may be named once")
        return self


class NatsDestinationSettings(NatsConnection):
    """A ``nats`` on-failure / on-success destination: each record published to ``subject``
    (JetStream publish, waiting for the stream's acknowledgement)."""

    subject: str = Field(min_length=1)
    stream: str | None = None
    """Expect this stream to store the subject (a publish to another stream fails)."""
