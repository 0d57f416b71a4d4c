"""The ``schedule`` source: EventBridge Scheduler semantics on the router's store.

Each scheduled time becomes one record holding the AWS ``Scheduled Event`` (or the configured
``input``), invoked asynchronously. Every replica runs the timer; ``store.claim_fire`` (a
unique row per schedule and scheduled time) decides which one delivers, so a time fires once.

Delivery is at-least-once:

* the claim writes the fire as pending (checkpoint ``fire:<time>`` = replica id) in the same
  transaction, and the fire is put into the sink; ``ack`` deletes the pending row and advances the
  ``delivered`` checkpoint;
* every replica holds one liveness lease ``schedules:<replica>`` for all its schedules
  (:mod:`connectors.schedule.coordinator`). A replica that starts again under the same id
  re-delivers its own pending fires; a replica that finds pending fires of another replica
  whose lease has expired takes that lease over and re-delivers them. The claim and the
  pending row are written in one store transaction, so no crash leaves a claim without its
  pending row. Claims, catch-up reads and checkpoint updates of many schedules made at the
  same moment are batched into one store call.
* a replica that is alive but cannot renew its lease for ``lease_ttl`` seconds may see its
  in-flight fires re-delivered by another one; the event ``id`` is stable per scheduled time
  so a function can recognise the duplicate.

Catch-up: at start, scheduled times after the last claimed fire (for a schedule that never
fired: after the first time it ran, the ``since`` checkpoint) that already passed are
delivered at once, oldest first, if they are within ``catch_up`` seconds; older ones are
skipped and counted in the log. Waiting for the next fire is one sleep until its due time
(re-checked against the wall clock, at most a minute at a time, so a clock step is noticed).

Store outages: every store call is retried in place by the mapping's supervisor (the mapping
shows ``PROBLEM: store unavailable while claiming the fire of ...``); the fire loop waits on
the claim, and once the store answers it delivers the fire and then every fire that came due
meanwhile, oldest first, skipping those older than ``catch_up`` (at least a minute). A claim
whose answer was lost is asked again: the store answers True again to the replica that owns
the row, so the fire is neither lost nor doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.schedule.coordinator import PENDING_PREFIX, ScheduleCoordinator
from connectors.schedule.cron import RateSchedule, Schedule, parse_schedule
from router.abc import MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.errors import SourceError, StoreError
from router.models import PluginSettings, Record, SourceKind, current_account
from router.supervisor import describe

logger = logging.getLogger(__name__)

EVENT_NAMESPACE = uuid.UUID("5c6b7f0e-2f3a-4d9b-9a43-1d0e8f6c2b71")
"""Namespace of the uuid5 event ids: stable per (mapping, scheduled time)."""
MAX_SLEEP = 60.0
"""Longest single sleep: a wall-clock step is noticed within AWS's 60 s precision."""
DELIVERED_KEY = "delivered"
SINCE_KEY = "since"
"""When a schedule that never fired first ran: where its catch-up starts."""
CATCH_UP_COUNT_LIMIT = 100_000
CLAIM_AHEAD = timedelta(seconds=5)
"""A fire is claimed (its pending row written) this long before its due time, and put into
the pipeline at its due time."""


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class FlexibleTimeWindow(BaseModel):
    """``{mode: OFF}`` or ``{mode: FLEXIBLE, maximum_window_in_minutes: 1..1440}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["OFF", "FLEXIBLE"] = Field(default="OFF", validation_alias=_alias("mode", "Mode"))
    maximum_window_in_minutes: int | None = Field(
        default=None,
        ge=1,
        le=1440,
        validation_alias=_alias("maximum_window_in_minutes", "MaximumWindowInMinutes"),
    )

    @model_validator(mode="after")
    def _window_matches_mode(self) -> FlexibleTimeWindow:
        if self.mode == "FLEXIBLE" and self.maximum_window_in_minutes is None:
            raise ValueError("mode FLEXIBLE needs maximum_window_in_minutes (1-1440)")
        if self.mode == "OFF" and self.maximum_window_in_minutes is not None:
            raise ValueError("maximum_window_in_minutes applies only to mode FLEXIBLE")
        return self

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.maximum_window_in_minutes or 0)


class ScheduleSettings(PluginSettings):
    """YAML keys of ``source: {type: schedule}`` (PascalCase Scheduler names as aliases)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: str = Field(validation_alias=_alias("schedule", "ScheduleExpression", "Schedule"))
    """``cron(...)``, ``rate(...)``, ``at(...)`` or a 5-field crontab."""
    timezone: str = Field(
        default="UTC", validation_alias=_alias("timezone", "ScheduleExpressionTimezone")
    )
    """IANA zone the expression is evaluated in."""
    input: Any = Field(default=None, validation_alias=_alias("input", "Input"))
    """Delivered instead of the Scheduled Event. A string holding JSON is delivered parsed;
    any other string is delivered as a JSON string. ``null`` means no input."""
    flexible_time_window: FlexibleTimeWindow = Field(
        default_factory=FlexibleTimeWindow,
        validation_alias=_alias("flexible_time_window", "FlexibleTimeWindow"),
    )
    catch_up: float = Field(default=3600.0, ge=0)
    """Seconds: missed fires younger than this are delivered at start; 0 disables."""
    start_date: datetime | None = Field(
        default=None, validation_alias=_alias("start_date", "StartDate")
    )
    end_date: datetime | None = Field(default=None, validation_alias=_alias("end_date", "EndDate"))
    account: str = Field(default_factory=current_account, pattern=r"^\d{12}$")
    region: str = "us-east-1"
    lease_ttl: float = Field(default=30.0, ge=1, le=3600)
    """Seconds a silent replica keeps its pending fires before another one re-delivers them."""

    @field_validator("schedule")
    @classmethod
    def _valid_expression(cls, value: str) -> str:
        parse_schedule(value)  # ScheduleExpressionError is a ValueError: pydantic reports it
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin"
            ) from None
        return value

    @model_validator(mode="after")
    def _dates_in_order(self) -> ScheduleSettings:
        start, end = self.aware_start(), self.aware_end()
        if start is not None and end is not None and end < start:
            raise ValueError("end_date is before start_date")
        return self

    def aware_start(self) -> datetime | None:
        return self._aware(self.start_date)

    def aware_end(self) -> datetime | None:
        return self._aware(self.end_date)

    def _aware(self, value: datetime | None) -> datetime | None:
        """Dates without an offset are wall times in ``timezone``."""
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=ZoneInfo(self.timezone))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _now() -> datetime:
    return datetime.now(UTC)


class ScheduleSource(Source):
    """Fires a mapping on a schedule, once per scheduled time across replicas."""

    Settings = ScheduleSettings
    traits = SourceTraits(
        kind=SourceKind.ASYNC,
        batch_size_default=1,
        batch_size_max=1,
        # EventBridge Scheduler's RetryPolicy allows 0-185 retries (default 185); the
        # router keeps Lambda's asynchronous-invocation default of 2.
        retry_default=2,
        retry_min=0,
        retry_max=185,
        record_age_default=21600,
        record_age_min=60,
        record_age_max=86400,
        supports=frozenset(
            {
                "maximum_retry_attempts",
                "maximum_record_age",
                "destination_config",
                "filter_criteria",
            }
        ),
    )

    settings: ScheduleSettings

    def __init__(
        self,
        settings: ScheduleSettings,
        context: SourceContext,
        *,
        clock: Callable[[], datetime] = _now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(settings, context)
        self._clock = clock
        self._sleep = sleep
        self._tz = ZoneInfo(settings.timezone)
        self._start = settings.aware_start()
        self._end = settings.aware_end()
        schedule = parse_schedule(settings.schedule)
        if isinstance(schedule, RateSchedule) and self._start is not None:
            schedule = schedule.with_anchor(self._start)
        self._schedule: Schedule = schedule
        mapping = context.mapping
        self._key = mapping.uuid or mapping.name
        self._coordinator = ScheduleCoordinator.of(context.store, context.replica_id)
        self._lane = mapping.name
        self._arn = (
            f"arn:aws:scheduler:{settings.region}:{settings.account}:schedule/default/"
            f"{mapping.name}"
        )
        self._inflight: set[datetime] = set()
        self.fire_delay: float | None = None
        """Seconds from the last delivered fire's due time until its ack."""
        self._delivered: datetime | None = None
        self._input = self._decode_input(settings.input)

    # ------------------------------------------------------------------ contract

    @property
    def key(self) -> str:
        """The schedule's key in the store (the mapping's uuid)."""
        return self._key

    async def run(self, sink: Sink) -> None:
        coordinator = self._coordinator
        try:
            await coordinator.register(self, sink)
            await self._fire_loop(sink)
            logger.info("schedule %s: no further fires (%s)", self._lane, self.settings.schedule)
            # Stays registered: a fire of it left pending by a dead replica is re-delivered.
            # (A bare future: an Event costs ~1 KB, and every at() schedule ends up here.)
            await asyncio.get_running_loop().create_future()
        finally:
            coordinator.unregister(self)

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        if self._input is not _NO_INPUT:
            return cast(dict[str, Any], self._input)
        event: dict[str, Any] = records[0].data
        return event

    async def ack(self, records: Sequence[Record]) -> None:
        if not records:
            return
        times: list[datetime] = [r.position for r in records]
        latest = max(times)
        if self._delivered is None or latest > self._delivered:
            self._delivered = latest
        try:
            # One write (batched with other schedules' acks): the ``delivered`` checkpoint,
            # the pending rows deleted, and ``since`` (once a fire is claimed, catch-up starts
            # from it).
            done = [PENDING_PREFIX + _iso(t) for t in times]
            update = (self._key, {DELIVERED_KEY: _iso(self._delivered)}, [*done, SINCE_KEY])
            await self._coordinator.update(update)
        except StoreError as e:
            fires = ", ".join(map(_iso, times))
            raise SourceError(describe(e, f"recording the fire of {fires} as delivered")) from e
        self._inflight.difference_update(times)
        latest_record = max(records, key=lambda r: r.position)
        self.fire_delay = max(0.0, self._clock().timestamp() - latest_record.arrival)
        logger.debug("schedule %s: delivered %s", self._lane, ", ".join(map(_iso, times)))

    def metrics(self) -> list[MetricFamily]:
        """``router_schedule_fire_delay_seconds``: how late the last fire was delivered."""
        if self.fire_delay is None:
            return []
        labels = {"mapping": self.context.mapping.name}
        return [
            MetricFamily(
                name="router_schedule_fire_delay_seconds",
                type="gauge",
                help="Seconds from the due time of the schedule's last delivered fire until "
                "the function took it (a fire caught up after an outage counts from its "
                "scheduled time)",
                samples=[("router_schedule_fire_delay_seconds", labels, self.fire_delay)],
            )
        ]

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._coordinator.release()

    # ------------------------------------------------------------------ firing

    def next_after(self, cursor: datetime) -> datetime | None:
        """The next scheduled time after ``cursor`` within start_date / end_date (UTC)."""
        t = self._schedule.next_fire(cursor, self._tz)
        if t is not None and self._start is not None and t < self._start:
            t = self._schedule.next_fire(self._start - timedelta(microseconds=1), self._tz)
        if t is None or (self._end is not None and t > self._end):
            return None
        return t.astimezone(UTC)

    def offset(self, scheduled: datetime) -> timedelta:
        """The flexible-window delay of one scheduled time: pseudo-random, but the same on
        every replica and every restart."""
        window = self.settings.flexible_time_window.window
        if not window:
            return timedelta(0)
        digest = hashlib.sha256(f"{self._key}:{_iso(scheduled)}".encode()).digest()
        return timedelta(seconds=int.from_bytes(digest[:8], "big") % int(window.total_seconds()))

    async def _fire_loop(self, sink: Sink) -> None:
        now = self._clock()
        cursor = await self._catch_up(sink, now)
        sink.supervisor.working()
        late_limit = timedelta(seconds=max(self.settings.catch_up, MAX_SLEEP))
        while (scheduled := self.next_after(cursor)) is not None:
            due = scheduled + self.offset(scheduled)
            # Claimed a little ahead, so that the store's round trip (one transaction for
            # every schedule due at that moment) is not part of the fire's delay.
            await self._sleep_until(due - CLAIM_AHEAD)
            cursor = scheduled
            if self._clock() - due > late_limit:
                # Held up (the store was down) for longer than the catch-up horizon.
                logger.warning(
                    "schedule %s: skipped the fire of %s, more than %ss late",
                    self._lane,
                    _iso(scheduled),
                    int(late_limit.total_seconds()),
                )
                continue
            await self._fire(sink, scheduled, due)

    async def _catch_up(self, sink: Sink, now: datetime) -> datetime:
        retry, coordinator = sink.supervisor.retry, self._coordinator
        checkpoints, last = await retry(
            f"reading the checkpoints and last fire of schedule {self._lane}",
            lambda: coordinator.read(self._key),
        )
        if DELIVERED_KEY in checkpoints:
            self._delivered = _parse_iso(checkpoints[DELIVERED_KEY])
        if last is None:
            # Never fired: catch up from the first time the schedule ran, so that a router
            # stopped before the first fire still delivers it when it comes back.
            if SINCE_KEY not in checkpoints:
                await retry(
                    f"recording the start of schedule {self._lane}",
                    lambda: coordinator.update((self._key, {SINCE_KEY: _iso(now)}, ())),
                )
                return now
            last = _parse_iso(checkpoints[SINCE_KEY])
        horizon = now - timedelta(seconds=self.settings.catch_up)
        skipped = 0
        cursor = last
        while (t := self.next_after(cursor)) is not None and t <= now:
            cursor = t
            if self.settings.catch_up and t > horizon:
                await self._fire(sink, t, t)
            else:
                skipped += 1
                if skipped >= CATCH_UP_COUNT_LIMIT:
                    break
        if skipped:
            more = "at least " if skipped >= CATCH_UP_COUNT_LIMIT else ""
            logger.warning(
                "schedule %s: skipped %s%d missed fire(s) between %s and %s "
                "(older than catch_up=%ss)",
                self._lane,
                more,
                skipped,
                _iso(last),
                _iso(horizon),
                self.settings.catch_up,
            )
        return now

    async def _fire(self, sink: Sink, scheduled: datetime, due: datetime) -> None:
        me, retry, coordinator = self.context.replica_id, sink.supervisor.retry, self._coordinator
        when = _iso(scheduled)
        # In flight before the pending row exists, so the recovery task never mistakes it
        # for a fire left behind by an earlier life of this replica.
        self._inflight.add(scheduled)
        # The claim and its pending row are one store transaction: a crash leaves both or
        # neither (and then another replica, or this one restarted, claims the time again).
        pending = {PENDING_PREFIX + when: me}
        try:
            won = await retry(
                f"claiming the fire of {when}",
                lambda: coordinator.claim((self._key, scheduled, pending)),
            )
        except BaseException:
            # Stopped while claiming: if the claim did commit, its pending row is there for
            # the recovery task to re-deliver.
            self._inflight.discard(scheduled)
            raise
        if not won:
            self._inflight.discard(scheduled)
            return  # another replica owns this scheduled time
        await self._sleep_until(due)
        await sink.put([self.record(scheduled, due)])

    async def _sleep_until(self, when: datetime) -> None:
        while (delay := (when - self._clock()).total_seconds()) > 0:
            await self._sleep(min(delay, MAX_SLEEP))

    def record(self, scheduled: datetime, due: datetime) -> Record:
        event: dict[str, Any] = {
            "version": "0",
            "id": str(uuid.uuid5(EVENT_NAMESPACE, f"{self._key}:{_iso(scheduled)}")),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.settings.account,
            "time": _iso(scheduled),
            "region": self.settings.region,
            "resources": [self._arn],
            "detail": {},
        }
        payload = event if self._input is _NO_INPUT else self._input
        return Record(
            lane=self._lane,
            position=scheduled,
            data=event,
            identifier=event["id"],
            size=len(orjson.dumps(payload)),
            arrival=due.timestamp(),
        )

    # ------------------------------------------------------------------ recovery

    def is_due(self, scheduled: datetime) -> bool:
        """Whether the fire of ``scheduled`` (claimed ahead of its due time) is due."""
        return scheduled + self.offset(scheduled) <= self._clock()

    def in_flight(self, scheduled: datetime) -> bool:
        """Whether this life of the replica is delivering the fire of ``scheduled``."""
        return scheduled in self._inflight

    async def redeliver(self, sink: Sink, times: list[datetime]) -> None:
        """Deliver again fires found pending (already pending under this replica)."""
        self._inflight.update(times)
        await sink.put([self.record(t, t + self.offset(t)) for t in times])

    # ------------------------------------------------------------------ input

    @staticmethod
    def _decode_input(value: Any) -> Any:
        if value is None:
            return _NO_INPUT
        if isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
        return value


_NO_INPUT: Any = object()
