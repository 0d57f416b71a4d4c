"""Settings of the RabbitMQ source and destination: the ``source:`` block of a mapping and a
``rabbitmq`` destination, validated at the YAML boundary.

The source also takes the spellings of an ``AWS::Lambda::EventSourceMapping`` for Amazon MQ:
``Queues`` and ``SourceAccessConfigurations`` (``BASIC_AUTH`` with a secret reference whose
value is the JSON ``{"username": ..., "password": ...}`` that Secrets Manager would hold, and
``VIRTUAL_HOST``)."""

from __future__ import annotations

import ssl as tls
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.errors import ConfigError
from router.models import PluginSettings, current_account
from router.secrets import Secret, SecretUrl, basic_auth

SCHEMES = ("amqp", "amqps")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def describe(error: BaseException) -> str:
    """A client error in one line (``AMQPConnectionError: ...``), for logs and
    ``last_processing_result``."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class RabbitConnection(PluginSettings):
    """Broker address, credentials and TLS, shared by the source and the destination."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretUrl
    """``amqp://HOST[:PORT][/VHOST]`` or ``amqps://`` for TLS; may hold
    ``user:${PASSWORD}@``."""
    virtual_host: str | None = None
    """Default: the URL's path (``/`` when it has none)."""
    username: str | None = None
    password: Secret | None = None
    basic_auth: Secret | None = None
    """A secret whose value is ``{"username": ..., "password": ...}`` (Amazon MQ's
    ``BASIC_AUTH`` source access configuration)."""
    ssl: bool | None = None
    """Default: true for ``amqps://``."""
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: Secret | None = None
    ssl_check_hostname: bool = True
    ssl_verify: bool = True
    connection_timeout: float = Field(default=10.0, gt=0, le=300)
    heartbeat: int = Field(default=60, ge=0, le=3600)
    """Seconds between AMQP heartbeats (0: none)."""
    client_name: str = "event-router"
    """The start of the connection names the broker shows (``NAME MAPPING REPLICA`` for a
    source, ``NAME destination MAPPING`` for a destination)."""

    @field_validator("url")
    @classmethod
    def _amqp_url(cls, value: SecretUrl) -> SecretUrl:
        text = value.text
        if text is None:
            return value  # a whole reference, checked when resolved
        parts = urlsplit(text)
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ValueError(
                "url must be an AMQP URL such as amqp://broker:5672/ or amqps://broker:5671/"
            )
        return value

    @model_validator(mode="after")
    def _check_credentials(self) -> RabbitConnection:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if self.basic_auth is not None and self.username is not None:
            raise ValueError(
                "give the credentials once: username/password or basic_auth "
                "(SourceAccessConfigurations BASIC_AUTH), not both"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile needs ssl_certfile")
        return self

    # ------------------------------------------------------------------ resolved

    def address(self) -> tuple[str, str, int, str]:
        """``(scheme, host, port, virtual host)`` of the resolved URL."""
        parts = urlsplit(self.url.reveal())
        if parts.scheme not in SCHEMES or not parts.hostname:
            raise ConfigError(
                f"url {self.url.describe()}: not an AMQP URL (amqp://HOST:PORT/ or amqps://)"
            )
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as e:
            raise ConfigError(f"url {self.url.describe()}: {e}") from None
        vhost = self.virtual_host
        if vhost is None:
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            vhost = unquote(path) or "/"
        return parts.scheme, parts.hostname, port, vhost

    @property
    def vhost(self) -> str:
        """The virtual host, as the event's ``queue::vhost`` key names it."""
        if self.virtual_host is not None:
            return self.virtual_host
        text = self.url.text
        if text is None:
            return self.address()[3]
        path = urlsplit(text).path
        return unquote(path[1:] if path.startswith("/") else path) or "/"

    def credentials(self) -> tuple[str, str]:
        """``(username, password)``: the settings', then basic_auth's, then the URL's, then
        RabbitMQ's default guest/guest."""
        if self.username is not None:
            return self.username, self.password.reveal() if self.password else ""
        if self.basic_auth is not None:
            return basic_auth(self.basic_auth, f"basic_auth {self.basic_auth.describe()}")
        parts = urlsplit(self.url.reveal())
        if parts.username is not None:
            return unquote(parts.username), unquote(parts.password or "")
        return "guest", "guest"

    def ssl_context(self) -> tls.SSLContext | None:
        scheme = urlsplit(self.url.reveal()).scheme
        use = self.ssl if self.ssl is not None else scheme == "amqps"
        if not use:
            return None
        context = tls.create_default_context(tls.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        if self.ssl_certfile is not None:
            password = self.ssl_key_password.reveal() if self.ssl_key_password else None
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile, password)
        if not self.ssl_verify:
            context.check_hostname = False
            context.verify_mode = tls.CERT_NONE
        else:
            context.check_hostname = self.ssl_check_hostname
        return context

    def where(self) -> str:
        """``host:port/vhost`` for messages (no credentials)."""
        text = self.url.text
        if text is None:
            return self.url.describe()
        parts = urlsplit(text)
        return f"{parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme, 5672)}"


_ACCESS_TYPES = ("BASIC_AUTH", "VIRTUAL_HOST")


def _from_aws_spelling(value: Any) -> Any:
    """``Queues`` and ``SourceAccessConfigurations`` to the snake_case keys."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    if "Queues" in out:
        if "queues" in out:
            raise ValueError("give the queue once: queues or Queues, not both")
        out["queues"] = out.pop("Queues")
    if "Broker" in out:
        # SAM's MQ event names the broker by ARN: it becomes the events' eventSourceArn (the
        # broker's address is url, given beside).
        if "event_source_arn" in out:
            raise ValueError("give the broker ARN once: Broker or event_source_arn, not both")
        out["event_source_arn"] = out.pop("Broker")
    if "SourceAccessConfigurations" in out:
        configurations = out.pop("SourceAccessConfigurations")
        if not isinstance(configurations, list):
            raise ValueError("SourceAccessConfigurations must be a list of {Type: ..., URI: ...}")
        for i, item in enumerate(configurations):
            if not isinstance(item, dict) or set(item) != {"Type", "URI"}:
                raise ValueError(f"SourceAccessConfigurations[{i}] must be {{Type: ..., URI: ...}}")
            kind, uri = item["Type"], item["URI"]
            key = {"BASIC_AUTH": "basic_auth", "VIRTUAL_HOST": "virtual_host"}.get(kind)
            if key is None:
                raise ValueError(
                    f"SourceAccessConfigurations[{i}]: Type {kind!r} is not supported for "
                    f"RabbitMQ; use one of {', '.join(_ACCESS_TYPES)}"
                )
            if key in out:
                raise ValueError(
                    f"SourceAccessConfigurations[{i}]: {kind} given twice (or also as {key})"
                )
            out[key] = uri
    return out


def _aws_spellings_schema(schema: dict[str, Any]) -> None:
    """The JSON schema also names the AWS spellings the model takes before validation."""
    props = schema.setdefault("properties", {})
    props["Queues"] = props.get("queues", {"type": "array", "items": {"type": "string"}})
    props["SourceAccessConfigurations"] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"Type": {"enum": list(_ACCESS_TYPES)}, "URI": {}},
            "required": ["Type", "URI"],
            "additionalProperties": False,
        },
    }
    required = schema.get("required")
    if isinstance(required, list) and "queues" in required:
        required.remove("queues")  # or Queues
        schema["anyOf"] = [{"required": ["queues"]}, {"required": ["Queues"]}]


class RabbitSourceSettings(RabbitConnection):
    """``source: {type: rabbitmq, url: ..., queues: [orders], ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_aws_spellings_schema)

    queues: list[str] = Field(min_length=1, max_length=1)
    """The one queue to read (Amazon MQ mappings take exactly one)."""
    prefetch_count: int | None = Field(default=None, ge=1, le=65_535)
    """Unacknowledged messages the broker sends ahead. Default: four batches (at least
    100), never more than the mapping's pipeline can hold."""
    ordered: bool = False
    """False (the default): batches of the queue run at once (up to the mapping's
    concurrency, 10 by default) and a failure requeues only the failed messages. True: one
    batch at a time in queue order; a failure requeues what waits behind it too, so nothing
    overtakes it (each requeue counts against a quorum queue's delivery limit for those
    messages as well)."""
    on_function_error: Literal["requeue", "retry"] = "requeue"
    """``requeue`` (as Lambda): a failed batch is nacked with requeue, so the broker's
    redelivery, delivery limit and dead-letter exchange apply. ``retry``: the router keeps
    the messages, retries the batch in place (``maximum_retry_attempts``,
    ``bisect_batch_on_function_error``, ``maximum_record_age``) and hands what is exhausted
    to the on-failure destination, then acknowledges it."""
    event_source_arn: str | None = None
    """The event's ``eventSourceArn``. Default: an Amazon MQ broker ARN made of the host,
    ``arn:aws:mq:us-east-1:ACCOUNT:broker:HOST:b-HOST``."""
    account: str = Field(default_factory=current_account, pattern=r"^\d{12}$")
    """The ACCOUNT of the default ``event_source_arn`` (``router.account_id``)."""

    @model_validator(mode="before")
    @classmethod
    def _aws_spelling(cls, value: Any) -> Any:
        return _from_aws_spelling(value)

    @field_validator("queues", mode="before")
    @classmethod
    def _one_queue(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and len(value) > 1:
            raise ValueError(
                "an Amazon MQ mapping reads exactly one queue: make one mapping per queue"
            )
        return value

    @property
    def queue(self) -> str:
        return self.queues[0]


class RabbitDestinationSettings(RabbitConnection):
    """``{type: rabbitmq, url: ..., exchange: failed, routing_key: orders}``: each
    destination record is published as one persistent JSON message, with publisher
    confirms."""

    exchange: str = ""
    """Default: the default exchange, where the routing key is a queue's name."""
    routing_key: str = ""
    mandatory: bool = True
    """A message no queue is bound for is returned by the broker and the send fails (the
    lane waits and retries) instead of being dropped."""

    @model_validator(mode="after")
    def _something_to_route(self) -> RabbitDestinationSettings:
        if not self.exchange and not self.routing_key:
            raise ValueError(
                "give routing_key (a queue's name on the default exchange) or an exchange"
            )
        return self
