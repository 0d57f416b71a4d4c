"""Randomised runs mixing every outcome over several lanes: whatever happens, each record is
resolved exactly once, acks stay in lane order, and nothing is held afterwards."""

from __future__ import annotations

import random
from typing import Any

import pytest

from router.models import InvokeResult, SourceKind
from tests.pipeline.conftest import MakeHarness
from tests.pipeline.fakes import (
    RecordingDestination,
    ScriptedInvoker,
    SkipMatcher,
    error,
    event_ids,
    ok,
    partial,
    record,
    throttle,
    transport,
)


def chaos(rng: random.Random) -> ScriptedInvoker:
    def handler(event: dict[str, Any]) -> InvokeResult:
        batch = event_ids(event)
        roll = rng.random()
        if roll < 0.15:
            return error()
        if roll < 0.25:
            return throttle()
        if roll < 0.3:
            return transport()
        if roll < 0.45:
            return partial(*rng.sample(batch, k=rng.randint(1, len(batch))))
        if roll < 0.5:
            return ok({"batchItemFailures": [{"itemIdentifier": None}]})
        return ok()

    return ScriptedInvoker(handler)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", list(SourceKind))
async def test_every_record_is_resolved_once(
    make: MakeHarness, kind: SourceKind, seed: int
) -> None:
    rng = random.Random(seed)
    lanes: list[Any] = ["a", "b", "c", None] if kind is SourceKind.QUEUE else ["a", "b", "c"]
    failure = RecordingDestination(failures=3)
    success = RecordingDestination(failures=2)
    h = make(
        kind,
        chaos(rng),
        on_failure=failure,
        on_success=success,
        capacity=40,
        batch_size=4,
        maximum_retry_attempts=2,
        bisect_batch_on_function_error=kind is SourceKind.STREAM,
        report_batch_item_failures=True,
        maximum_concurrency=3,
        matcher=SkipMatcher(),
    )
    order: dict[str, list[str]] = {str(lane): [] for lane in lanes}
    batch = []
    for i in range(150):
        lane = rng.choice(lanes)
        batch.append(record(i, lane, skip=1) if rng.random() < 0.1 else record(i, lane))
        order[str(lane)].append(str(i))
        if len(batch) == 15:
            await h.put(batch)
            batch = []
    await h.drain()
    await h.check()
    if kind is not SourceKind.QUEUE:
        assert sorted(h.source.acked, key=int) == [str(i) for i in range(150)]
        h.acks_in_lane_order(order)
    else:
        del order["None"]
        h.acks_in_lane_order(order)
