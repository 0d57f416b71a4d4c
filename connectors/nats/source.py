"""NATS JetStream as a source: a durable pull consumer per mapping.

The consumer (named from the mapping) is shared by every replica; each fetches what the
mapping has room for. A message is acknowledged only after it was delivered, filtered out or
handed to a destination; while the router holds it (queued in a lane or in a batch that is
running) it tells the server every ``ack_wait / 3`` that it is still working on it
(``in_progress``), so the server does not deliver it again meanwhile. Messages the router gives
back without delivering them (the mapping stops, the source fails) are negatively
acknowledged with ``nak_delay``: the server delivers them again, here or to another replica.
After a crash the server delivers again, after ``ack_wait``, what was not acknowledged.
One lane per subject (or, with ``parallelization_factor``, per subject and key header).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.nats.records import (
    batch_info,
    build_event,
    filter_viewer,
    nats_view,
    record_converter,
)
from connectors.nats.settings import NatsSourceSettings, consumer_name, describe
from router.abc import MappingProblem, MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.errors import ConfigError, SourceError
from router.models import MappingConfig, Record, SourceKind

_DATA = attrgetter("data.data")
"""The payload bytes of a record's message (what the filter view decodes as ``data``)."""

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext, api

logger = logging.getLogger(__name__)

_POLICIES = {"TRIM_HORIZON": "all", "LATEST": "new", "AT_TIMESTAMP": "by_start_time"}
"""The JetStream deliver policy (a ``nats.js.api.DeliverPolicy`` value) of each position."""


class NatsSource(Source):
    """Reads one stream of one mapping through a durable pull consumer (see module
    docstring)."""

    Settings: ClassVar[type[NatsSourceSettings]] = NatsSourceSettings
    requires: ClassVar[Mapping[str, str]] = {"nats": "nats"}
    traits: ClassVar[SourceTraits] = SourceTraits(
        kind=SourceKind.STREAM,
        filter_view=nats_view,
        batch_size_default=100,
        batch_size_max=10_000,
        window_default=0.0,
        starting_positions=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"),
        starting_position_default="LATEST",
        retry_default=-1,
        supports=frozenset(
            {
                "bisect_batch_on_function_error",
                "maximum_retry_attempts",
                "maximum_record_age",
                "function_response_types",
                "destination_config",
                "filter_criteria",
                "parallelization_factor",
                "starting_position",
                "starting_position_timestamp",
            }
        ),
    )

    settings: NatsSourceSettings

    def __init__(self, settings: NatsSourceSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        mapping = context.mapping
        self._address = settings.address
        self._durable = settings.consumer or consumer_name(mapping.name)
        slots = max(1, mapping.parallelization_factor)
        self._convert = record_converter(slots, settings.key_header)
        position: str
        if settings.starting_position is not None:
            position = settings.starting_position
            self._start_time = settings.starting_position_timestamp
        else:
            position = mapping.starting_position or "LATEST"
            self._start_time = mapping.starting_position_timestamp
        self._policy = _POLICIES[position]
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._held: dict[int, Msg] = {}
        """Messages read and not yet acknowledged, by stream sequence."""
        self._keeper: asyncio.Task[None] | None = None
        self._due_metrics = 0.0
        self._unacked: int | None = None
        self._lag: int | None = None
        self._closed = False

    # -- the Source contract ------------------------------------------------------------

    @classmethod
    def validate_mapping(cls, mapping: MappingConfig) -> Sequence[MappingProblem]:
        settings = mapping.source.settings
        if (
            mapping.parallelization_factor > 1
            and isinstance(settings, NatsSourceSettings)
            and settings.key_header is None
        ):
            return [
                MappingProblem(
                    setting="parallelization_factor",
                    message="a nats source spreads a subject over several lanes by a header of "
                    "its messages: set source.key_header (e.g. key_header: customer)",
                )
            ]
        return ()

    async def run(self, sink: Sink) -> None:
        from nats.errors import Error as NatsError
        from nats.errors import TimeoutError as NatsTimeout

        try:
            sub = await self._subscribe()
            if self._keeper is None or self._keeper.done():
                self._keeper = asyncio.create_task(self._keep_alive(), name="nats-in-progress")
            s = self.settings
            while True:
                if time.monotonic() >= self._due_metrics:
                    self._due_metrics = time.monotonic() + s.metrics_interval
                    await self._read_metrics()
                free = sink.free()
                if free <= 0:
                    await sink.wait_for_room()
                    continue
                try:
                    messages = await sub.fetch(min(free, s.fetch_count), timeout=s.fetch_timeout)
                except NatsTimeout:
                    continue
                held = self._held
                fresh: list[Msg] = []
                for msg in messages:
                    if not msg.reply:
                        continue  # a status message, not a stream message
                    seq = msg.metadata.sequence.stream
                    if seq in held:
                        continue  # delivered again while still held here
                    held[seq] = msg
                    fresh.append(msg)
                if fresh:
                    try:
                        await sink.put(self._convert(fresh))
                    except BaseException:
                        # Not handed over: the server delivers them again.
                        await self._give_back(fresh)
                        raise
        except (NatsError, OSError) as e:
            raise SourceError(f"nats {self._address}: {describe(e)}") from e

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return build_event(self._address, self.settings.stream, self._durable, records)

    async def ack(self, records: Sequence[Record]) -> None:
        from nats.errors import Error as NatsError

        held = self._held
        try:
            for record in records:
                msg: Msg = record.data
                if not msg._ackd:
                    await msg.ack()
                held.pop(msg.metadata.sequence.stream, None)
        except (NatsError, OSError) as e:
            raise SourceError(f"nats {self._address}: acknowledging: {describe(e)}") from e

    def filter_viewer(self, fields: frozenset[str] | None) -> Callable[[Record], Any]:
        return filter_viewer(fields)

    def filter_payload(self) -> tuple[str, Callable[[Record], object]]:
        return "data", _DATA

    def batch_info(self, records: Sequence[Record]) -> dict[str, Any]:
        return batch_info(self._address, self.settings.stream, self._durable, records)

    def metrics(self) -> Sequence[MetricFamily]:
        labels = {"mapping": self.context.mapping.name, "stream": self.settings.stream}
        families = []
        if self._unacked is not None:
            families.append(
                MetricFamily(
                    name="router_source_unacked_records",
                    type="gauge",
                    help="Records handed to the mapping's consumers and not acknowledged yet",
                    samples=[("router_source_unacked_records", labels, self._unacked)],
                )
            )
        if self._lag is not None:
            families.append(
                MetricFamily(
                    name="router_source_lag_records",
                    type="gauge",
                    help="Records in the source not handed to the mapping's consumers yet",
                    samples=[("router_source_lag_records", labels, self._lag)],
                )
            )
        return families

    async def aclose(self) -> None:
        from nats.errors import Error as NatsError

        if self._closed:
            return
        self._closed = True
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        nc, self._nc = self._nc, None
        if nc is None:
            return
        try:
            await self._give_back()
            await nc.flush(timeout=max(1, int(self.settings.request_timeout)))
        except (TimeoutError, NatsError, OSError) as e:
            logger.warning(
                "nats %s: consumer %s: could not give back unacknowledged messages (the "
                "server delivers them again after ack_wait): %s",
                self._address,
                self._durable,
                describe(e),
            )
        with contextlib.suppress(NatsError, OSError):
            await nc.close()

    # -- the consumer ---------------------------------------------------------------------

    async def _connect(self) -> JetStreamContext:
        import nats

        if self._nc is None or self._nc.is_closed:
            s = self.settings

            async def disconnected() -> None:
                logger.warning("nats %s: disconnected; reconnecting", self._address)

            async def reconnected() -> None:
                logger.info("nats %s: reconnected", self._address)

            async def error(e: Exception) -> None:
                logger.warning("nats %s: %s", self._address, describe(e))

            self._nc = await nats.connect(
                name=f"event-router:{self.context.mapping.name}",
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
                error_cb=error,
                **s.connect_kwargs(),
            )
            self._js = self._nc.jetstream(timeout=s.request_timeout)
            self._sub = None
        assert self._js is not None
        return self._js

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        from nats.js.errors import NotFoundError

        js = await self._connect()
        if self._sub is not None:
            return self._sub
        s = self.settings
        await self._ensure_stream(js)
        try:
            await js.consumer_info(s.stream, self._durable)
        except NotFoundError:
            await js.add_consumer(s.stream, self._consumer_config())
            logger.info(
                "nats %s: created consumer %s on stream %s (%s)",
                self._address,
                self._durable,
                s.stream,
                self._policy,
            )
        self._sub = await js.pull_subscribe_bind(self._durable, s.stream)
        return self._sub

    def _consumer_config(self) -> api.ConsumerConfig:
        from nats.js import api

        s = self.settings
        config = api.ConsumerConfig(
            durable_name=self._durable,
            deliver_policy=api.DeliverPolicy(self._policy),
            opt_start_time=self._start_time if self._policy == "by_start_time" else None,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=s.ack_wait,
            max_deliver=s.max_deliver,
            max_ack_pending=s.max_ack_pending,
        )
        if len(s.subjects) == 1:
            config.filter_subject = s.subjects[0]
        elif s.subjects:
            config.filter_subjects = list(s.subjects)
        return config

    async def _ensure_stream(self, js: JetStreamContext) -> None:
        from nats.js.errors import NotFoundError

        s = self.settings
        nc = self._nc
        if len(s.subjects) > 1 and nc is not None:
            version = nc.connected_server_version
            if (version.major, version.minor) < (2, 10):
                raise ConfigError(
                    f"nats stream {s.stream}: several subjects for one consumer need NATS 2.10 "
                    f"or later (this server is {version}); use one subject with wildcards "
                    "(orders.>) or one mapping per subject"
                )
        try:
            await js.stream_info(s.stream)
        except NotFoundError:
            if not s.create_stream:
                raise ConfigError(
                    f"nats stream {s.stream} does not exist (create it, or set create_stream: true)"
                ) from None
            if not s.subjects:
                raise ConfigError(
                    f"nats stream {s.stream} does not exist and no subjects are given to "
                    "create it with"
                ) from None
            await js.add_stream(name=s.stream, subjects=list(s.subjects))
            logger.info("nats %s: created stream %s for %s", self._address, s.stream, s.subjects)

    async def _keep_alive(self) -> None:
        """Tell the server every ``ack_wait / 3`` that held messages are being worked on."""
        from nats.errors import Error as NatsError

        interval = self.settings.ack_wait / 3
        while True:
            await asyncio.sleep(interval)
            try:
                for msg in list(self._held.values()):
                    if not msg._ackd:
                        await msg.in_progress()
            except (NatsError, OSError) as e:
                logger.warning(
                    "nats %s: in-progress acknowledgements: %s", self._address, describe(e)
                )

    async def _give_back(self, messages: Sequence[Msg] | None = None) -> None:
        """Negatively acknowledge held messages (``messages``, or all), with ``nak_delay``."""
        from nats.errors import Error as NatsError

        delay = self.settings.nak_delay or None
        held = self._held
        for msg in list(held.values()) if messages is None else messages:
            held.pop(msg.metadata.sequence.stream, None)
            if not msg._ackd:
                with contextlib.suppress(NatsError, OSError):
                    await msg.nak(delay=delay)

    async def _read_metrics(self) -> None:
        from nats.errors import Error as NatsError

        js = self._js
        if js is None:
            return
        try:
            info = await js.consumer_info(self.settings.stream, self._durable)
        except (NatsError, OSError) as e:
            logger.warning("nats %s: consumer info: %s", self._address, describe(e))
            return
        self._unacked = info.num_ack_pending
        self._lag = info.num_pending
