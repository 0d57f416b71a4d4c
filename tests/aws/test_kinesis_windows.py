"""Tumbling windows on a Kinesis stream (moto): the state the function returns is carried
from one invocation of a window to the next, kept in the store across a restart, and the
window's final invocation comes once, with the window's whole state."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest

from connectors.aws.streams.windows import WINDOW_PREFIX, iso, window_start
from router.store import SQLStore
from tests.aws import stream_handlers
from tests.aws.streams import kinesis_config, make_stream, put
from tests.helpers import eventually, run_router

pytestmark = [pytest.mark.aws]

WINDOW = 30


@pytest.fixture(autouse=True)
def events() -> Any:
    stream_handlers.EVENTS.clear()
    yield stream_handlers.EVENTS
    stream_handlers.EVENTS.clear()


async def _arrivals(kinesis: Any, arn: str) -> dict[str, float]:
    """Data -> approximate arrival (epoch seconds) of every record of the one shard."""
    shard = (await kinesis.list_shards(StreamARN=arn))["Shards"][0]["ShardId"]
    iterator = (
        await kinesis.get_shard_iterator(
            StreamARN=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )
    )["ShardIterator"]
    got = await kinesis.get_records(ShardIterator=iterator, StreamARN=arn)
    return {
        r["Data"].decode(): round(r["ApproximateArrivalTimestamp"].timestamp(), 3)
        for r in got["Records"]
    }


def _values(event: dict[str, Any]) -> list[int]:
    return [int(stream_handlers.data_of(r)) for r in event["Records"]]


async def test_window_state_survives_a_restart_and_the_final_invoke_comes_once(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    mapping = f"    starting_position: TRIM_HORIZON\n    tumbling_window: {WINDOW}"
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        config = kinesis_config(arn, aws.endpoint, handler="window_sum", mapping=mapping)
        # Start early in a window, so that it is still open when the first run stops.
        if time.time() % WINDOW > 5:
            await asyncio.sleep(WINDOW - time.time() % WINDOW)
        await put(kinesis, arn, [("k", str(i)) for i in range(1, 6)])
        async with run_router(config, sqlite_store):
            await eventually(
                lambda: sum(map(len, map(_values, events))) == 5, what="the first 5 records"
            )
            row = await sqlite_store.get_mapping_by_name("clicks")
            assert row is not None
            uuid = row.uuid

            async def stored() -> str | None:
                rows = await sqlite_store.get_checkpoints(uuid)
                found = [v for k, v in rows.items() if k.startswith(WINDOW_PREFIX)]
                return found[0] if found and orjson.loads(found[0])["state"] else None

            saved = orjson.loads(await eventually(stored, what="the window's state stored"))
        assert saved["state"] == {"sum": 15}
        assert not any(e["isFinalInvokeForWindow"] for e in events)
        first_run = len(events)
        await put(kinesis, arn, [("k", str(i)) for i in range(6, 11)])
        arrivals = await _arrivals(kinesis, arn)
        windows: dict[float, list[int]] = defaultdict(list)
        for data, arrival in arrivals.items():
            windows[window_start(arrival, WINDOW)].append(int(data))
        assert saved["start"] == window_start(arrivals["1"], WINDOW)

        def finals() -> list[dict[str, Any]]:
            return [e for e in events if e["isFinalInvokeForWindow"]]

        async with run_router(config, sqlite_store):
            await eventually(
                lambda: len(finals()) == len(windows),
                timeout=WINDOW + 60,
                what="every window's final invocation",
            )

            async def rows_gone() -> bool:
                rows = await sqlite_store.get_checkpoints(uuid)
                return not any(k.startswith(WINDOW_PREFIX) for k in rows)

            await eventually(rows_gone, what="the windows' rows deleted")
            await asyncio.sleep(1.5)  # a second final invocation would come by now
        # The first invocation after the restart carried the state stored before it.
        assert events[first_run]["state"] == {"sum": 15}
    assert len(finals()) == len(windows)
    by_window: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        assert event["shardId"] == "shardId-000000000000"
        assert event["eventSourceARN"] == arn
        assert event["isWindowTerminatedEarly"] is False
        by_window[event["window"]["start"]].append(event)
    assert sorted(by_window) == sorted(iso(s) for s in windows)
    for start, values in windows.items():
        invocations = by_window[iso(start)]
        assert invocations[0]["window"]["end"] == iso(start + WINDOW)
        assert invocations[0]["state"] == {}
        *regular, final = invocations
        assert final["isFinalInvokeForWindow"] and final["Records"] == []
        assert final["state"] == {"sum": sum(values)}
        assert sorted(v for e in regular for v in _values(e)) == sorted(values)


async def test_an_answer_without_state_fails_the_invocation(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    mapping = (
        f"    starting_position: TRIM_HORIZON\n    tumbling_window: {WINDOW}\n"
        "    maximum_retry_attempts: 1"
    )
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis)
        [answer] = await put(kinesis, arn, [("k", "1")])
        config = kinesis_config(arn, aws.endpoint, handler="window_stateless", mapping=mapping)
        async with run_router(config, sqlite_store):
            await eventually(lambda: len(events) >= 2, what="the invocation and its retry")
            row = await sqlite_store.get_mapping_by_name("clicks")
            assert row is not None

            async def reported() -> bool:
                status = await sqlite_store.get_mapping(row.uuid)
                return status is not None and "state object" in status.last_processing_result

            await eventually(reported, what="the problem reported")
    assert events[0]["Records"][0]["kinesis"]["sequenceNumber"] == answer["SequenceNumber"]
    assert events[1]["state"] == {}
