"""Settings of the Kafka source and destination: the ``source:`` block of a mapping and a
``kafka`` destination, validated at the YAML boundary; and how both describe a client error."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.models import PluginSettings
from router.secrets import Secret, basic_auth

StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]


def describe(error: BaseException) -> str:
    """A Kafka client error in one line (``KafkaConnectionError: ...``), for logs and
    ``last_processing_result``."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _as_list(value: Any) -> Any:
    """Accept ``"h1:9092,h2:9092"`` as well as a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


SASL_ACCESS = {
    "BASIC_AUTH": "PLAIN",
    "SASL_SCRAM_256_AUTH": "SCRAM-SHA-256",
    "SASL_SCRAM_512_AUTH": "SCRAM-SHA-512",
}
"""SourceAccessConfigurations types that carry SASL credentials, and their mechanism."""
NETWORK_ACCESS = ("VPC_SUBNET", "VPC_SECURITY_GROUP")
"""Where AWS's pollers run: the router connects from where it runs, so these are dropped."""
TLS_ACCESS = ("CLIENT_CERTIFICATE_TLS_AUTH", "SERVER_ROOT_CA_CERTIFICATE")


def _access_configurations(out: dict[str, Any], items: Any) -> None:
    """Kafka's ``SourceAccessConfigurations`` -> ``sasl_mechanism`` + ``sasl_credentials``
    (``security_protocol`` SASL_SSL unless given, as AWS connects)."""
    if not isinstance(items, list):
        raise ValueError("SourceAccessConfigurations must be a list of {Type: ..., URI: ...}")  # noqa: TRY004
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"Type", "URI"}:
            raise ValueError(f"SourceAccessConfigurations[{i}] must be {{Type: ..., URI: ...}}")
        kind = item["Type"]
        if kind in NETWORK_ACCESS:
            continue
        if kind in TLS_ACCESS:
            raise ValueError(
                f"SourceAccessConfigurations[{i}]: {kind} is not read from a secret here; "
                "give ssl_cafile / ssl_certfile / ssl_keyfile (PEM files) and "
                "security_protocol: SSL instead"
            )
        mechanism = SASL_ACCESS.get(kind)
        if mechanism is None:
            known = ", ".join([*SASL_ACCESS, *NETWORK_ACCESS])
            raise ValueError(f"SourceAccessConfigurations[{i}]: unknown Type {kind!r} ({known})")
        for key in ("sasl_mechanism", "sasl_credentials"):
            if key in out:
                raise ValueError(
                    f"SourceAccessConfigurations[{i}]: {kind} gives {key}, which is given "
                    "already; give the credentials once"
                )
        out["sasl_mechanism"] = mechanism
        out["sasl_credentials"] = item["URI"]
        out.setdefault("security_protocol", "SASL_SSL")


def _one_or_list_schema(*keys: str) -> Any:
    """The JSON schema says what ``_as_list`` accepts: a comma-separated string too."""

    def extra(schema: dict[str, Any]) -> None:
        props = schema.get("properties", {})
        for key in keys:
            if key in props:
                props[key] = {"anyOf": [props[key], {"type": "string", "minLength": 1}]}

    return extra


class KafkaConnection(PluginSettings):
    """Broker address and security, shared by the source and the destination."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=_one_or_list_schema("bootstrap_servers")
    )

    bootstrap_servers: list[str] = Field(min_length=1)
    client_id: str = "event-router"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: Secret | None = None
    sasl_credentials: Secret | None = None
    """Instead of ``sasl_plain_username`` / ``sasl_plain_password``: a secret holding
    ``{"username": ..., "password": ...}`` (SourceAccessConfigurations' ``BASIC_AUTH`` /
    ``SASL_SCRAM_*_AUTH`` URI)."""
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(default=30_000, ge=1_000)

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split_servers(cls, value: Any) -> Any:
        return _as_list(value)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaConnection:
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_mechanism is None:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_mechanism "
                    "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
                )
            plain = self.sasl_plain_username is not None or self.sasl_plain_password is not None
            if plain and self.sasl_credentials is not None:
                raise ValueError(
                    "give the credentials once: sasl_plain_username / sasl_plain_password "
                    "or sasl_credentials (SourceAccessConfigurations), not both"
                )
            if self.sasl_credentials is None and (
                self.sasl_plain_username is None or self.sasl_plain_password is None
            ):
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs sasl_plain_username "
                    "and sasl_plain_password (or sasl_credentials)"
                )
        return self

    @property
    def bootstrap(self) -> str:
        """``h1:9092,h2:9092``, as the event's ``bootstrapServers``."""
        return ",".join(self.bootstrap_servers)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to aiokafka's consumer and producer."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism is not None:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                kwargs["sasl_plain_password"] = self.sasl_plain_password.reveal()
            if self.sasl_credentials is not None:
                where = f"sasl_credentials {self.sasl_credentials.describe()}"
                user, password = basic_auth(self.sasl_credentials, where)
                kwargs["sasl_plain_username"] = user
                kwargs["sasl_plain_password"] = password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            context = create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_password.reveal() if self.ssl_password else None,
            )
            # aiokafka's helper takes no check_hostname (it raised TypeError): set it here.
            context.check_hostname = self.ssl_check_hostname
            kwargs["ssl_context"] = context
        return kwargs


class KafkaSourceSettings(KafkaConnection):
    """The ``source:`` block of a ``type: kafka`` mapping (minus ``type``).

    Consumer timeouts default to Apache Kafka's own defaults; tests and latency-sensitive
    deployments lower ``session_timeout_ms`` / ``heartbeat_interval_ms`` so that a dead
    replica's partitions move sooner.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra=_one_or_list_schema("bootstrap_servers", "topics"),
    )

    topics: list[str] = Field(min_length=1)
    consumer_group_id: str | None = None
    """Defaults to the mapping's uuid (as Lambda does)."""
    starting_position: StartingPosition | None = None
    """Overrides the mapping-level ``starting_position`` when given here."""
    starting_position_timestamp: datetime | None = None
    session_timeout_ms: int = Field(default=45_000, ge=100)
    heartbeat_interval_ms: int = Field(default=3_000, ge=10)
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    rebalance_timeout_ms: int | None = None
    """How long the group waits for members to rejoin; defaults to ``max_poll_interval_ms``."""
    revoke_timeout: float = Field(default=10.0, ge=0)
    """Seconds a rebalance waits for in-flight batches of revoked partitions."""
    fetch_max_wait_ms: int = Field(default=500, ge=0)
    max_partition_fetch_bytes: int = Field(default=1_048_576, ge=1024)
    max_poll_records: int = Field(default=1_000, ge=1)
    commit_interval: float = Field(default=0.05, ge=0)
    """Minimum seconds between two offset commits (commits are coalesced)."""
    checkpoint_interval: float = Field(default=1.0, ge=0)
    """Minimum seconds between two copies of the committed offsets into the store."""
    close_timeout: float = Field(default=10.0, gt=0)
    """Seconds the last offset commit, and then leaving the group, may each take when the
    source stops; what could not be committed is delivered again after a restart."""
    static_membership: bool = True
    """Join the group as a static member (Kafka's ``group.instance.id``, made of the replica
    id and the mapping): a replica restarted within ``session_timeout_ms`` gets its
    partitions back at once, without waiting for its old session to expire. A static member
    that stops does not leave the group: its partitions move after ``session_timeout_ms``.
    Needs Kafka 2.3+; replicas must have distinct ids."""
    probe_interval: float = Field(default=10.0, gt=0)
    """Seconds without fetched records after which the source asks the cluster for its
    metadata: a broker that cannot be reached then shows as ``PROBLEM`` (the client itself
    keeps retrying quietly)."""

    @model_validator(mode="before")
    @classmethod
    def _from_aws_spelling(cls, value: Any) -> Any:
        """SAM's ``MSK`` / ``SelfManagedKafka`` properties (and the CloudFormation
        ``EventSourceMapping`` ones) -> the snake_case keys."""
        if not isinstance(value, dict):
            return value
        out = dict(value)
        # An MSK cluster ARN names no broker address: bootstrap_servers must be given beside.
        for cluster in ("Stream", "EventSourceArn"):
            out.pop(cluster, None)
        renames = {
            "Topics": "topics",
            "KafkaBootstrapServers": "bootstrap_servers",
            "ConsumerGroupId": "consumer_group_id",
        }
        endpoints = out.pop("SelfManagedEventSource", None)
        if endpoints is not None:
            servers = (
                endpoints.get("Endpoints", {}).get("KafkaBootstrapServers")
                if isinstance(endpoints, dict) and isinstance(endpoints.get("Endpoints"), dict)
                else None
            )
            if servers is None:
                raise ValueError(
                    "SelfManagedEventSource must be {Endpoints: {KafkaBootstrapServers: "
                    "[HOST:PORT, ...]}}"
                )
            out["KafkaBootstrapServers"] = servers
        for config in (
            "SelfManagedKafkaEventSourceConfig",
            "AmazonManagedKafkaEventSourceConfig",
            "SelfManagedKafkaConfig",
        ):
            block = out.pop(config, None)
            if block is None:
                continue
            if not isinstance(block, dict) or set(block) - {"ConsumerGroupId"}:
                raise ValueError(f"{config} must be {{ConsumerGroupId: GROUP}}")
            out["ConsumerGroupId"] = block.get("ConsumerGroupId")
        if "SourceAccessConfigurations" in out:
            _access_configurations(out, out.pop("SourceAccessConfigurations"))
        for aws, ours in renames.items():
            if aws not in out:
                continue
            if ours in out:
                raise ValueError(f"give {ours} once: {ours} or {aws}, not both")
            out[ours] = out.pop(aws)
        return out

    @field_validator("topics", mode="before")
    @classmethod
    def _split_topics(cls, value: Any) -> Any:
        return _as_list(value)

    @model_validator(mode="after")
    def _check_position(self) -> KafkaSourceSettings:
        if self.starting_position == "AT_TIMESTAMP" and self.starting_position_timestamp is None:
            raise ValueError("starting_position AT_TIMESTAMP needs starting_position_timestamp")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be lower than session_timeout_ms")
        return self


class KafkaDestinationSettings(KafkaConnection):
    """A ``kafka`` on-failure / on-success destination: one topic, JSON records."""

    topic: str = Field(min_length=1)
    max_request_size: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Destination records carry the original batch (up to 6 MB); the broker's
    ``message.max.bytes`` must allow what is configured here."""
