"""Kafka as an on-failure / on-success destination: each destination record is produced as
one JSON message to a topic."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import orjson

from connectors.kafka.settings import KafkaDestinationSettings, KafkaSourceSettings, describe
from router.abc import Destination, DestinationContext
from router.errors import DestinationError

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer


class KafkaDestination(Destination):
    """Produces each destination record as one JSON message to a topic (``acks=all``)."""

    Settings: ClassVar[type[KafkaDestinationSettings]] = KafkaDestinationSettings
    requires: ClassVar[Mapping[str, str]] = {"aiokafka": "kafka"}
    settings: KafkaDestinationSettings

    def __init__(self, settings: KafkaDestinationSettings, context: DestinationContext) -> None:
        super().__init__(settings, context)
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_target(
        cls, target: str, source: KafkaSourceSettings | None = None
    ) -> KafkaDestinationSettings:
        """Settings for ``kafka://host:port[,host:port]/topic``. Lambda's own form
        ``kafka://topic`` means "a topic on the source's cluster": pass the mapping's Kafka
        source settings and its servers and security settings are used."""
        parts = urlsplit(target)
        if parts.scheme != "kafka":
            raise ValueError(f"expected kafka://host:port/topic or kafka://topic, got {target!r}")
        topic = parts.path.lstrip("/")
        if topic:
            servers = [s for s in parts.netloc.split(",") if s]
            return KafkaDestinationSettings(bootstrap_servers=servers, topic=topic)
        topic = parts.netloc
        if not topic:
            raise ValueError(f"no topic in {target!r}")
        if source is None:
            raise ValueError(
                f"{target!r} names only a topic; use kafka://host:port/{topic} "
                "or a mapping with a kafka source"
            )
        inherited = source.model_dump(include=set(KafkaDestinationSettings.model_fields))
        return KafkaDestinationSettings(**inherited, topic=topic)

    async def _started(self) -> AIOKafkaProducer:
        from connectors.kafka.client import AIOKafkaProducer

        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=False,
                    max_request_size=self.settings.max_request_size,
                    **self.settings.client_kwargs(),
                )
                try:
                    await producer.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def send(self, record: Mapping[str, Any]) -> None:
        from connectors.kafka.client import KafkaError

        s = self.settings
        try:
            producer = await self._started()
            await producer.send_and_wait(s.topic, orjson.dumps(record))
        except (KafkaError, OSError, TimeoutError) as e:
            raise DestinationError(
                f"kafka destination {s.topic!r} on {s.bootstrap}: {describe(e)}"
            ) from e

    async def aclose(self) -> None:
        from connectors.kafka.client import KafkaError

        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await producer.stop()
