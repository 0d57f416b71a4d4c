"""The ``eventbridge`` source: a rule on an event bus, with its function as the target.

Every mapping of this type is a rule of the bus it names (``event_bus``, ``default`` unless
said). While at least one runs, the ingress listener serves EventBridge's ``PutEvents``
(``X-Amz-Target: AWSEvents.PutEvents``, JSON 1.1, SigV4 for the service ``events`` when
credentials are configured). For each valid entry the bus builds one event and commits it to
the asynchronous queue once for each rule of its bus whose pattern (``event_pattern`` and the
mapping's ``filter_criteria``) matches, before it answers; the entry's ``EventId`` is the
event's ``id``. From the queue the rule's pipeline delivers it with EventBridge's retry
policy (``maximum_retry_attempts`` 0-185, ``maximum_event_age`` 60-86,400 s) and the
mapping's on-failure destination as the dead-letter queue; the target input (``input``,
``input_path``, ``input_transformer``) is applied when the event is delivered.

A bus exists while a rule names it (``default`` always does): an entry for another bus gets
``ResourceNotFoundException``; an entry the store could not take for one of its rules gets
``InternalFailure`` (the caller retries it, as with EventBridge; rules that had it already get
it again: at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from connectors.eventbridge.events import (
    DEFAULT_BUS,
    Entry,
    EntryError,
    answer,
    build_event,
    check_entry,
    event_time,
    parse_request,
)
from connectors.eventbridge.transform import RuleInfo, TargetInput, TransformError
from router.abc import Sink, SourceTraits
from router.backoff import LambdaAsyncRetry
from router.errors import RouterError
from router.filters import Matcher, compile_patterns
from router.ingress import Ingress, IngressListener, IngressRequest, Registration
from router.ingress.source import PushedSource
from router.models import PluginSettings, Record, SourceKind, current_account

logger = logging.getLogger(__name__)

PUT_EVENTS = "AWSEvents.PutEvents"
MAX_BODY = 2 * 1024 * 1024
"""256 KB of entries, escaped as JSON text inside the request, fit in this."""


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class InputTransformerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_paths_map: dict[str, str] = Field(
        default_factory=dict, validation_alias=_alias("input_paths_map", "InputPathsMap")
    )
    input_template: str = Field(validation_alias=_alias("input_template", "InputTemplate"))


class EventBridgeSettings(PluginSettings):
    """YAML keys of ``source: {type: eventbridge}`` (EventBridge's names as aliases)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_bus: str = Field(
        default=DEFAULT_BUS, min_length=1, validation_alias=_alias("event_bus", "EventBusName")
    )
    event_pattern: str | dict[str, Any] | None = Field(
        default=None, validation_alias=_alias("event_pattern", "EventPattern", "Pattern")
    )
    """The rule's pattern, as JSON text or YAML; the mapping's ``filter_criteria`` also
    applies."""
    input: str | None = Field(default=None, validation_alias=_alias("input", "Input"))
    input_path: str | None = Field(default=None, validation_alias=_alias("input_path", "InputPath"))
    input_transformer: InputTransformerSettings | None = Field(
        default=None, validation_alias=_alias("input_transformer", "InputTransformer")
    )
    account: str = Field(default_factory=current_account, pattern=r"^\d{12}$")
    region: str = "us-east-1"

    @model_validator(mode="after")
    def _valid(self) -> EventBridgeSettings:
        self.target_input()  # TransformError is a ValueError: pydantic reports it
        if self.event_pattern is not None:
            compile_patterns([self.event_pattern])  # PatternError is a ValueError
        return self

    def target_input(self) -> TargetInput:
        transformer = self.input_transformer
        try:
            return TargetInput.parse(
                input=self.input,
                input_path=self.input_path,
                paths_map=None if transformer is None else transformer.input_paths_map,
                template=None if transformer is None else transformer.input_template,
            )
        except TransformError as e:
            raise ValueError(str(e)) from None

    @property
    def bus(self) -> str:
        return self.event_bus.rsplit(":event-bus/", 1)[-1]


class EventBridgeSource(PushedSource):
    """One rule of an event bus; see the module's docstring."""

    Settings = EventBridgeSettings
    traits = SourceTraits(
        kind=SourceKind.ASYNC,
        batch_size_default=1,
        batch_size_max=1,
        # A rule target's RetryPolicy: 0-185 retries (185 by default), events up to 24 h old.
        retry_default=185,
        retry_min=0,
        retry_max=185,
        record_age_default=86400,
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

    settings: EventBridgeSettings

    def async_retry(self) -> LambdaAsyncRetry | None:
        """A rule target retries with EventBridge's policy (exponential backoff with jitter,
        the router's), not with Lambda's asynchronous timing."""
        return None

    def __init__(self, settings: EventBridgeSettings, context: Any) -> None:
        super().__init__(settings, context)
        self.input = settings.target_input()
        mapping = context.mapping
        patterns: list[Any] = list(mapping.filter_patterns)
        self._criteria: Matcher | None = compile_patterns(patterns) if patterns else None
        self._pattern: Matcher | None = (
            compile_patterns([settings.event_pattern])
            if settings.event_pattern is not None
            else None
        )
        bus = settings.bus
        path = mapping.name if bus == DEFAULT_BUS else f"{bus}/{mapping.name}"
        self.rule = RuleInfo(
            name=mapping.name,
            arn=f"arn:aws:events:{settings.region}:{settings.account}:rule/{path}",
        )

    def matches(self, event: Mapping[str, Any]) -> bool:
        if self._pattern is not None and not self._pattern.matches(event):
            return False
        return self._criteria is None or self._criteria.matches(event)

    def serving(self, ingress: Ingress, sink: Sink) -> AbstractAsyncContextManager[Any]:
        @contextlib.asynccontextmanager
        async def served() -> AsyncIterator[None]:
            bus = EventBus.of(ingress)
            bus.add(self)
            try:
                yield
            finally:
                bus.remove(self)

        return served()

    def build_event(self, records: Sequence[Record]) -> Any:
        event = records[0].data
        if self.input.is_identity:
            return event
        ingested = event_time(datetime.fromtimestamp(records[0].arrival, UTC))
        return self.input.apply(event, self.rule, ingested)


class EventBus:
    """The rules of every bus on one listener, and ``PutEvents`` while there are any."""

    _buses: weakref.WeakKeyDictionary[IngressListener, EventBus] = weakref.WeakKeyDictionary()

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self.rules: dict[str, dict[str, EventBridgeSource]] = {}
        self._registration: Registration | None = None

    @classmethod
    def of(cls, ingress: Ingress) -> EventBus:
        bus = cls._buses.get(ingress.listener)
        if bus is None or bus.ingress is not ingress:
            bus = cls._buses[ingress.listener] = cls(ingress)
        return bus

    def add(self, rule: EventBridgeSource) -> None:
        mapping = rule.context.mapping
        self.rules.setdefault(rule.settings.bus, {})[mapping.uuid] = rule
        if self._registration is None:
            self._registration = self.ingress.listener.add_target(
                PUT_EVENTS,
                self.put_events,
                owner="the event bus",
                service="events",
                max_body=MAX_BODY,
            )

    def remove(self, rule: EventBridgeSource) -> None:
        bus = rule.settings.bus
        rules = self.rules.get(bus, {})
        if rules.get(rule.context.mapping.uuid) is rule:
            del rules[rule.context.mapping.uuid]
        if not rules:
            self.rules.pop(bus, None)
        if not self.rules and self._registration is not None:
            self._registration.remove()
            self._registration = None

    async def put_events(self, request: IngressRequest) -> web.StreamResponse:
        entries = parse_request(request.body)
        received = datetime.fromtimestamp(request.received, UTC)
        results: list[dict[str, str] | None] = [None] * len(entries)
        pending: list[tuple[int, Any]] = []
        for i, raw in enumerate(entries):
            checked = check_entry(raw)
            if isinstance(checked, EntryError):
                results[i] = checked.answer()
                continue
            results[i], writes = self._accept(checked, received)
            pending.extend((i, write) for write in writes)
        outcomes = await asyncio.gather(*(w for _, w in pending), return_exceptions=True)
        for (i, _), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, RouterError | OSError):
                    raise outcome
                if "ErrorCode" not in (results[i] or {}):
                    logger.warning("PutEvents: an entry was not accepted: %s", outcome)
                    results[i] = {
                        "ErrorCode": "InternalFailure",
                        "ErrorMessage": "The event could not be stored; retry it.",
                    }
        return web.Response(
            body=orjson.dumps(answer([r or {} for r in results])),
            content_type="application/x-amz-json-1.1",
        )

    def _accept(self, entry: Entry, received: datetime) -> tuple[dict[str, str], list[Any]]:
        rules = self.rules.get(entry.bus)
        if rules is None and entry.bus != DEFAULT_BUS:
            return {
                "ErrorCode": "ResourceNotFoundException",
                "ErrorMessage": f"Event bus {entry.bus} does not exist.",
            }, []
        event_id = str(uuid.uuid4())
        writes = []
        for rule in (rules or {}).values():
            event = build_event(
                entry,
                account=rule.settings.account,
                region=rule.settings.region,
                received=received,
                event_id=event_id,
            )
            if rule.matches(event):
                writes.append(self.ingress.queue.enqueue(rule.context.mapping, event))
        return {"EventId": event_id}, writes


__all__ = ["EventBridgeSettings", "EventBridgeSource", "EventBus"]
