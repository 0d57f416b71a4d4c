"""The ``rabbitmq`` source: one RabbitMQ queue, as Lambda's Amazon MQ for RabbitMQ event
source mapping reads it.

* One consumer on the queue (``basic.consume``, manual acknowledgements), the broker's
  prefetch bounded by what the mapping's pipeline can hold: the broker never sends more
  unacknowledged messages than fit.
* Batches run at once, as for an SQS standard queue (``ordered: false``, the default), or
  the queue is one ordered lane whose batches are delivered one at a time, in queue order.
* A message is acknowledged only once it was delivered, filtered out or (``retry`` mode)
  handed to the on-failure destination; the done messages at the front of the outstanding
  ones go as one ``multiple`` ack.
* ``requeue`` (the default, as Lambda): failed messages are nacked with requeue (in an ordered
  queue what waits behind them too, so nothing overtakes them), so the broker's redelivery
  count, delivery limit and dead-letter exchange apply; the consumer waits with backoff
  before it takes the redelivered messages. ``retry``: the delivery policy of a stream:
  retries in place, bisect, on-failure destination, then ack.
* A lost connection ends ``run`` (the supervisor reconnects with backoff and shows the
  outage in ``last_processing_result``); the broker requeues what this connection had not
  acknowledged, so messages read before it are delivered again (at least once) and their
  acknowledgements on the old connection are skipped.
* ``messages ready`` and the consumers of the queue are read every few seconds for
  :meth:`RabbitSource.metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from connectors.rabbitmq.connection import connect, connect_errors
from connectors.rabbitmq.records import rabbitmq_view, rmq_message
from connectors.rabbitmq.settings import RabbitSourceSettings, describe
from router import logs
from router.abc import MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.backoff import Backoff
from router.errors import SourceError
from router.models import ACCOUNT_ID, Record, SourceKind

if TYPE_CHECKING:
    import aiormq
    from aiormq.abc import DeliveredMessage

logger = logging.getLogger(__name__)
warnings = logs.LimitedLogger(logger)

DEPTH_EVERY = 5.0
"""Seconds between two readings of the queue's depth."""
REQUEUE_BACKOFF = Backoff(base=0.5, cap=30.0)
"""Waits before redelivered messages are taken after a failed batch (full jitter)."""
PREFETCH_MAX = 65_535
_RECORD_OVERHEAD = 420
"""basicProperties and keys around the base64 body, in bytes (for the 6 MB batch limit)."""

_COMMON = frozenset({"filter_criteria", "function_response_types"})

QUEUE_TRAITS = SourceTraits(
    kind=SourceKind.QUEUE,
    filter_view=rabbitmq_view,
    batch_size_default=100,
    batch_size_max=10_000,
    window_default=0.5,
    supports=_COMMON,
)
"""``on_function_error: requeue``: Lambda's Amazon MQ mapping."""

RETRY_TRAITS = SourceTraits(
    kind=SourceKind.STREAM,
    filter_view=rabbitmq_view,
    batch_size_default=100,
    batch_size_max=10_000,
    window_default=0.5,
    supports=_COMMON
    | {
        "bisect_batch_on_function_error",
        "maximum_retry_attempts",
        "maximum_record_age",
        "destination_config",
    },
)
"""``on_function_error: retry``: failures are retried by the router as for a stream."""


def broker_arn(host: str, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:mq:us-east-1:{account}:broker:{host}:b-{host}"


class RabbitSource(Source):
    """Consumes one queue for one mapping."""

    Settings = RabbitSourceSettings
    requires = {"aio_pika": "rabbitmq"}
    traits = QUEUE_TRAITS

    def __init__(self, settings: RabbitSourceSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.settings: RabbitSourceSettings = settings
        self.queue = settings.queue
        self.key = f"{settings.queue}::{settings.vhost}"
        """The event's ``rmqMessagesByQueue`` key."""
        self.lane = self.key if settings.ordered else None
        self._arn = settings.event_source_arn
        self._generation = 0
        """Counts connections: a delivery tag is only valid on the channel it came from."""
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._outstanding: dict[int, bool] = {}
        """Delivery tags of the current channel not yet acked or nacked, in order, with
        whether the message is done (acknowledged by the pipeline, not yet at the broker)."""
        self._buffer: list[Record] = []
        self._arrived = asyncio.Event()
        self._paused_until = 0.0
        self._failures = 0
        self._prefetch: int | None = None
        self._consumer_tag: str | None = None
        self.ready: int | None = None
        """Messages ready in the queue, as last read (None before the first reading)."""
        self.consumers: int | None = None

    @classmethod
    def traits_for(cls, settings: Any) -> SourceTraits:
        if getattr(settings, "on_function_error", "requeue") == "retry":
            return RETRY_TRAITS
        return QUEUE_TRAITS

    @property
    def event_source_arn(self) -> str:
        if self._arn is None:
            try:
                host = self.settings.address()[1]
            except Exception:  # noqa: BLE001 - an unresolvable URL: run() says why
                host = "rabbitmq"
            self._arn = broker_arn(host, self.settings.account)
        return self._arn

    # ------------------------------------------------------------------ reading

    async def run(self, sink: Sink) -> None:
        import aiormq

        self._generation += 1
        generation = self._generation
        self._outstanding.clear()
        self._buffer.clear()
        mapping = self.context.mapping
        name = f"{self.settings.client_name} {mapping.name} {self.context.replica_id}"
        connection = await connect(self.settings, name=name)
        where = f"rabbitmq queue {self.key} on {self.settings.where()}"
        try:
            try:
                channel = await connection.channel(publisher_confirms=False)
                raw = await channel.get_underlay_channel()
                declared = await raw.queue_declare(self.queue, passive=True)
                if self._prefetch is None:
                    ahead = max(4 * mapping.batch_size, 100)
                    room = max(sink.free(), 1)
                    self._prefetch = self.settings.prefetch_count or min(ahead, room)
                    self._prefetch = min(self._prefetch, room, PREFETCH_MAX)
                await raw.basic_qos(prefetch_count=self._prefetch)
                self._depth(declared)
                self._channel = raw
                await self._consume(raw, generation)
            except asyncio.CancelledError:
                raise
            except aiormq.exceptions.ChannelNotFoundEntity as e:
                raise SourceError(
                    f"{where}: the queue does not exist (declare it on the broker; the router "
                    "does not create queues)"
                ) from e
            except aiormq.exceptions.ChannelAccessRefused as e:
                raise SourceError(f"{where}: access refused: {describe(e)}") from e
            except connect_errors() as e:
                raise SourceError(f"{where}: {describe(e)}") from e
            sink.supervisor.working()
            logger.info(
                "mapping %s: consuming %s (prefetch %d)", mapping.name, where, self._prefetch
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._feed(sink, generation))
                tasks.create_task(self._watch_depth(raw))
                tasks.create_task(self._watch_closed(raw, where))
        finally:
            self._channel = None
            try:
                await asyncio.shield(connection.close())
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - closing a broken connection
                logger.debug("%s: closing the connection: %s", where, describe(e))

    async def _consume(self, raw: aiormq.abc.AbstractChannel, generation: int) -> None:
        ok = await raw.basic_consume(self.queue, self._receiver(generation), no_ack=False)
        self._consumer_tag = ok.consumer_tag

    def _receiver(self, generation: int) -> Any:
        from pamqp.commands import Basic

        lane = self.lane
        buffer = self._buffer
        outstanding = self._outstanding
        arrived = self._arrived

        async def on_message(message: DeliveredMessage) -> None:
            if generation != self._generation:
                return
            delivery = message.delivery
            assert isinstance(delivery, Basic.Deliver)
            properties = message.header.properties
            body = message.body
            tag = delivery.delivery_tag or 0
            redelivered = bool(delivery.redelivered)
            outstanding[tag] = False
            buffer.append(
                Record(
                    lane=lane,
                    position=(generation, tag),
                    data=rmq_message(properties, body, redelivered),
                    identifier=properties.message_id or "",
                    size=(len(body) + 2) // 3 * 4 + _RECORD_OVERHEAD,
                    arrival=time.time(),
                )
            )
            arrived.set()

        return on_message

    async def _feed(self, sink: Sink, generation: int) -> None:
        """Hand what arrived to the pipeline, in order; hold it while a failed batch's
        backoff runs."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            wait = self._paused_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                self._arrived.set()
                continue
            records = self._buffer[:]
            self._buffer.clear()
            if not records:
                continue
            redelivered = sum(1 for r in records if r.data["redelivered"])
            if redelivered:
                self._redelivered(redelivered, len(records))
            await sink.put(records)

    def _redelivered(self, again: int, received: int) -> None:
        mapping = self.context.mapping
        warnings.warning(
            (mapping.uuid or mapping.name, "redelivery"),
            "mapping %s: %d of %d messages received from %s were delivered before "
            "(redelivered): an earlier batch failed, or a connection closed before its "
            "acknowledgement",
            mapping.name,
            again,
            received,
            self.key,
            mapping=mapping.name,
            cause="redelivery",
        )

    async def _watch_closed(self, raw: aiormq.abc.AbstractChannel, where: str) -> None:
        try:
            await raw.closing
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise SourceError(f"{where}: connection lost: {describe(e)}") from e
        raise SourceError(f"{where}: the broker closed the channel")

    async def _watch_depth(self, raw: aiormq.abc.AbstractChannel) -> None:
        while True:
            await asyncio.sleep(DEPTH_EVERY)
            try:
                declared = await raw.queue_declare(self.queue, passive=True)
            except connect_errors():
                return  # _watch_closed reports the lost channel
            self._depth(declared)

    def _depth(self, declared: Any) -> None:
        self.ready = declared.message_count
        self.consumers = declared.consumer_count

    # ------------------------------------------------------------------ acknowledging

    def _current(self, records: Sequence[Record]) -> list[int]:
        """Delivery tags of ``records`` that belong to the open channel; the others were
        requeued by the broker when their connection closed."""
        generation = self._generation
        tags = [r.position[1] for r in records if r.position[0] == generation]
        stale = len(records) - len(tags)
        if stale:
            mapping = self.context.mapping
            warnings.warning(
                (mapping.uuid or mapping.name, "stale-ack"),
                "mapping %s: %d messages were read on a connection that has closed since; "
                "the broker delivers them again (at least once)",
                mapping.name,
                stale,
                mapping=mapping.name,
                cause="stale-ack",
            )
        return tags

    def _open_channel(self) -> aiormq.abc.AbstractChannel:
        channel = self._channel
        if channel is None or channel.is_closed:
            raise SourceError(
                f"rabbitmq queue {self.key}: the connection is closed; the broker delivers "
                "unacknowledged messages again"
            )
        return channel

    async def ack(self, records: Sequence[Record]) -> None:
        """Mark the messages done and acknowledge the done messages at the front of the
        channel's outstanding ones with one ``multiple`` ack: batches that finish out of
        order (unordered queues) are acknowledged once the batches before them are. Until
        then the broker keeps them unacknowledged (and redelivers them if the connection
        closes: at least once)."""
        outstanding = self._outstanding
        current = self._current(records)
        if not current:
            return
        channel = self._open_channel()
        for tag in current:
            # A tag no longer outstanding was requeued with a failure behind it.
            if tag in outstanding:
                outstanding[tag] = True
        await self._ack_done(channel)
        self._failures = 0

    async def _ack_done(self, channel: aiormq.abc.AbstractChannel) -> None:
        outstanding = self._outstanding
        last = None
        # Taken off before the ack is sent: a concurrent ack must not send it again (the
        # broker closes a channel that acks an unknown delivery tag).
        while outstanding:
            tag = next(iter(outstanding))
            if not outstanding[tag]:
                break
            del outstanding[tag]
            last = tag
        if last is None:
            return
        try:
            await channel.basic_ack(last, multiple=True)
        except asyncio.CancelledError:
            raise
        except connect_errors() as e:
            # The channel is gone: the broker redelivers these (at least once).
            raise SourceError(f"rabbitmq queue {self.key}: ack failed: {describe(e)}") from e

    async def release(self, records: Sequence[Record]) -> None:
        """Nack with requeue; the consumer waits with backoff before it hands over what
        arrives next (the redelivered messages among it).

        Ordered: the consumer is cancelled first (what the broker sent before the cancel is
        then here), then the failed messages and everything this channel holds behind them
        (the lane behind a failure is released too, and what arrived and was not handed over
        yet) go back in one ``multiple`` nack, so the broker puts them all back in their
        places at once; consuming again, it redelivers them in queue order."""
        now = time.monotonic()
        if self._paused_until <= now:
            self._failures += 1
            self._paused_until = now + REQUEUE_BACKOFF.delay(self._failures)
        outstanding = self._outstanding
        tags = [t for t in self._current(records) if t in outstanding]
        if not tags:
            return  # already requeued (by an earlier release, or a closed connection)
        channel = self._open_channel()
        try:
            if self.lane is not None:
                # What is done (before the failure, or acknowledged out of order) is
                # acknowledged on its own first: the multiple nack below must not take it.
                for tag in [t for t, done in outstanding.items() if done]:
                    del outstanding[tag]
                    await channel.basic_ack(tag)
                if not outstanding:
                    return
                if self._consumer_tag is not None:
                    await channel.basic_cancel(self._consumer_tag)
                    self._consumer_tag = None
                self._buffer.clear()
                last = next(reversed(outstanding))
                outstanding.clear()
                await channel.basic_nack(last, multiple=True)
                await self._consume(channel, self._generation)
            else:
                for tag in sorted(tags):
                    if outstanding.pop(tag, None) is not None:
                        await channel.basic_nack(tag, requeue=True)
                await self._ack_done(channel)  # done messages that waited behind these
        except asyncio.CancelledError:
            raise
        except connect_errors() as e:
            raise SourceError(f"rabbitmq queue {self.key}: nack failed: {describe(e)}") from e

    # ------------------------------------------------------------------ the event

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "eventSource": "aws:rmq",
            "eventSourceArn": self.event_source_arn,
            "rmqMessagesByQueue": {self.key: [r.data for r in records]},
        }

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return {
            "RabbitMQBatchInfo": {
                "queue": self.queue,
                "virtualHost": self.settings.vhost,
                "batchSize": len(records),
                "eventSourceArn": self.event_source_arn,
                "approximateArrivalOfFirstRecord": _iso(records[0].arrival) if records else None,
                "approximateArrivalOfLastRecord": _iso(records[-1].arrival) if records else None,
            }
        }

    def metrics(self) -> Sequence[MetricFamily]:
        labels = {"mapping": self.context.mapping.name, "queue": self.key}
        families = [
            MetricFamily(
                name="router_rabbitmq_messages_ready",
                type="gauge",
                help="Messages ready in the queue (not delivered to any consumer), as last read",
                samples=[("router_rabbitmq_messages_ready", labels, self.ready)]
                if self.ready is not None
                else [],
            ),
            MetricFamily(
                name="router_rabbitmq_messages_unacknowledged",
                type="gauge",
                help="Messages this router holds from the queue, not yet acked or nacked",
                samples=[
                    (
                        "router_rabbitmq_messages_unacknowledged",
                        labels,
                        len(self._outstanding),
                    )
                ],
            ),
        ]
        return families

    async def aclose(self) -> None:
        self._channel = None


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
