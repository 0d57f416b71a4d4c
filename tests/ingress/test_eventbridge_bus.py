"""The bus's answer when the store refuses an entry: that entry is ``InternalFailure`` (the
caller retries it), the others are accepted; rules match before anything is queued."""

from __future__ import annotations

import json
import time
from typing import Any, cast

from aiohttp import web

from connectors.eventbridge.source import EventBridgeSettings, EventBridgeSource, EventBus
from router.abc import SourceContext, Store
from router.config.convert import IngressSettings
from router.errors import StoreError
from router.functions import Functions
from router.ingress import AsyncQueue, Ingress, IngressListener, IngressRequest
from router.models import MappingConfig, SourceSpec


class RefusingQueue:
    """Takes events, except those whose detail says ``refuse``."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, Any]] = []

    async def enqueue(self, target: MappingConfig, payload: Any, **_: Any) -> str:
        if payload["detail"].get("refuse"):
            raise StoreError("the store is read-only")
        self.queued.append((target.name, payload))
        return "id"


def _rule(name: str, pattern: str) -> EventBridgeSource:
    settings = EventBridgeSettings.model_validate({"event_pattern": pattern})
    mapping = MappingConfig(
        name=name,
        uuid=f"00000000-0000-4000-8000-00000000000{len(name)}",
        function="f",
        source=SourceSpec(type="eventbridge", settings=settings),
    )
    return EventBridgeSource(
        settings,
        SourceContext(mapping=mapping, store=cast(Store, None), replica_id="r"),
    )


async def test_a_refused_entry_is_internal_failure_and_the_others_are_accepted() -> None:
    queue = RefusingQueue()
    listener = IngressListener(IngressSettings())
    ingress = Ingress(
        settings=IngressSettings(),
        listener=listener,
        functions=cast(Functions, None),
        queue=cast(AsyncQueue, queue),
    )
    bus = EventBus.of(ingress)
    bus.add(_rule("shop", '{"source": ["shop"]}'))
    bus.add(_rule("audit", '{"detail-type": ["Audited"]}'))
    entries = [
        {"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"n": 1})},
        {"Source": "shop", "DetailType": "OrderPlaced", "Detail": json.dumps({"refuse": 1})},
        {"Source": "other", "DetailType": "Audited", "Detail": "{}"},
    ]
    request = IngressRequest(
        http=cast(web.Request, None),
        body=json.dumps({"Entries": entries}).encode(),
        params={},
        request_id="r",
        received=time.time(),
    )
    answer = await bus.put_events(request)
    assert isinstance(answer, web.Response) and answer.body is not None
    result = json.loads(cast(bytes, answer.body))
    assert result["FailedEntryCount"] == 1
    first, refused, third = result["Entries"]
    assert refused == {
        "ErrorCode": "InternalFailure",
        "ErrorMessage": "The event could not be stored; retry it.",
    }
    assert [(name, e["id"]) for name, e in queue.queued] == [
        ("shop", first["EventId"]),
        ("audit", third["EventId"]),
    ]
