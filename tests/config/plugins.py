"""Small source / invoker / destination plug-ins for the configuration tests.

They carry the AWS traits of the real source types (as AWS documents them for event source
mappings) but do no I/O; :func:`install` points the registry at them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from pydantic import field_validator

from connectors.aws.sqs import SQSSource, sqs_view
from connectors.kafka.records import kafka_view
from router.abc import Destination, Invoker, Sink, Source, SourceTraits
from router.filters.view import kinesis_view
from router.models import Invocation, InvokeResult, Outcome, PluginSettings, Record, SourceKind
from router.secrets import Secret

STREAM_SUPPORTS = frozenset(
    {
        "bisect_batch_on_function_error",
        "function_response_types",
        "maximum_retry_attempts",
        "maximum_record_age",
        "destination_config",
        "filter_criteria",
    }
)


class _NoIO(Source):
    async def run(self, sink: Sink) -> None:
        raise NotImplementedError

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.data for r in records]}

    async def ack(self, records: Sequence[Record]) -> None:
        return None


class FolderSettings(PluginSettings):
    path: str
    suffix: str = ""


class FolderSource(_NoIO):
    """Like ``directory``: asynchronous invocation, one event per invoke."""

    Settings = FolderSettings
    traits = SourceTraits(
        kind=SourceKind.ASYNC,
        batch_size_default=1,
        batch_size_max=1,
        retry_default=2,
        retry_min=0,
        retry_max=2,
        record_age_default=21_600,
        record_age_min=60,
        record_age_max=21_600,
        supports=frozenset(
            {
                "maximum_retry_attempts",
                "maximum_record_age",
                "destination_config",
                "filter_criteria",
            }
        ),
    )


class StreamSettings(PluginSettings):
    bootstrap_servers: str
    topics: list[str]
    sasl_password: Secret | None = None


class StreamSource(_NoIO):
    """Like ``kafka``."""

    Settings = StreamSettings
    traits = SourceTraits(
        kind=SourceKind.STREAM,
        filter_view=kafka_view,
        batch_size_default=100,
        batch_size_max=10_000,
        window_default=0.5,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        starting_position_default=None,
        supports=STREAM_SUPPORTS,
    )


class ShardSource(_NoIO):
    """Like ``kinesis``: parallelization factor, starting position required."""

    Settings = StreamSettings
    traits = SourceTraits(
        kind=SourceKind.STREAM,
        filter_view=kinesis_view,
        batch_size_default=100,
        batch_size_max=10_000,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        supports=STREAM_SUPPORTS | {"parallelization_factor"},
    )


class QueueSettings(PluginSettings):
    queue_url: str


class QueueSource(_NoIO):
    """Like ``sqs``: FIFO queues have other limits."""

    Settings = QueueSettings
    traits = SourceTraits(
        kind=SourceKind.QUEUE,
        filter_view=sqs_view,
        batch_size_default=10,
        batch_size_max=10_000,
        supports=frozenset({"function_response_types", "maximum_concurrency", "filter_criteria"}),
    )
    fifo_traits = SourceTraits(
        kind=SourceKind.QUEUE,
        filter_view=sqs_view,
        batch_size_default=10,
        batch_size_max=10,
        window_max=0,
        supports=frozenset({"function_response_types", "maximum_concurrency", "filter_criteria"}),
    )

    @classmethod
    def traits_for(cls, settings: Any) -> SourceTraits:
        if str(settings.queue_url).endswith(".fifo"):
            return cls.fifo_traits
        return cls.traits

    validate_mapping = SQSSource.validate_mapping  # the real source's own rules


class HandlerSettings(PluginSettings):
    handler: str

    @field_validator("handler")
    @classmethod
    def _shape(cls, value: str) -> str:
        module, sep, function = value.partition(":")
        if not sep or not module or not function:
            raise ValueError(f"handler {value!r} must look like 'module:function'")
        return value


class EchoInvoker(Invoker):
    Settings: ClassVar[type[PluginSettings]] = HandlerSettings

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        return InvokeResult(outcome=Outcome.SUCCESS, payload=invocation.event)


class UrlInvokerSettings(PluginSettings):
    url: str


class UrlInvoker(EchoInvoker):
    Settings = UrlInvokerSettings


class _Sink(Destination):
    async def send(self, record: Mapping[str, Any]) -> None:
        return None


class TableDestination(_Sink):
    Settings = PluginSettings


class ArnSettings(PluginSettings):
    arn: str
    region: str | None = None


class ArnDestination(_Sink):
    Settings = ArnSettings


class UrlSettings(PluginSettings):
    url: str
    timeout: float = 10.0


class UrlDestination(_Sink):
    Settings = UrlSettings


class PathSettings(PluginSettings):
    path: str


class PathDestination(_Sink):
    Settings = PathSettings


class TopicSettings(PluginSettings):
    topic: str
    bootstrap_servers: str | None = None


class TopicDestination(_Sink):
    Settings = TopicSettings


HERE = __name__
SOURCES = {
    "directory": f"{HERE}:FolderSource",
    "kafka": f"{HERE}:StreamSource",
    "kinesis": f"{HERE}:ShardSource",
    "sqs": f"{HERE}:QueueSource",
    "s3": "connectors.not_written_yet:S3Source",
    "needs-lib": "tests.config.missing_lib:Source",
}
INVOKERS = {"python": f"{HERE}:EchoInvoker", "http": f"{HERE}:UrlInvoker"}
DESTINATIONS = {
    "table": f"{HERE}:TableDestination",
    "sqs": f"{HERE}:ArnDestination",
    "sns": f"{HERE}:ArnDestination",
    "s3": f"{HERE}:ArnDestination",
    "http": f"{HERE}:UrlDestination",
    "directory": f"{HERE}:PathDestination",
    "kafka": f"{HERE}:TopicDestination",
}


PLUGINS = {"source": SOURCES, "invoker": INVOKERS, "destination": DESTINATIONS}


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the registry at the test plug-ins instead of the installed entry points."""
    from router import registry

    monkeypatch.setattr(registry, "plugins", lambda kind: dict(PLUGINS[kind]))
