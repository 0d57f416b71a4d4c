"""Resharding a Kinesis stream (moto through tests/fixtures/moto_server.py): what the emulator
does on a split and a merge, then a split and a merge while a Router reads, with the order of
each partition key kept across them and the closed shards' checkpoints and leases cleaned up.

Hash key ranges of the stream made here (2 shards, 2**128 keys, ``H`` = 2**127)::

    shard 0  [0, H)      split at H/2 ->  shard 2 [0, H/2)    shard 3 [H/2, H)
    shard 1  [H, 2H)                      shard 3 + shard 1 merged -> shard 4 [H/2, 2H)
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from router.store import SQLStore
from router.store import tables as t
from tests.aws import stream_handlers
from tests.aws.streams import delivered, kinesis_config, make_stream, put
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.aws

HALF = 2**127
SPLIT_AT = HALF // 2


def shard(n: int) -> str:
    return f"shardId-{n:012d}"


def hash_of(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest(), 16)  # the hash Kinesis maps keys with


def keys_per_quarter(count: int) -> list[str]:
    """``count`` partition keys in each quarter of the hash key space, so that every shard
    before and after the reshard holds some."""
    quarters: dict[int, list[str]] = defaultdict(list)
    i = 0
    while any(len(quarters[q]) < count for q in range(4)):
        key = f"key-{i}"
        quarter = hash_of(key) // SPLIT_AT
        if len(quarters[quarter]) < count:
            quarters[quarter].append(key)
        i += 1
    return [k for q in range(4) for k in quarters[q]]


async def shards_of(kinesis: Any, arn: str) -> dict[str, dict[str, Any]]:
    listing = await kinesis.list_shards(StreamARN=arn)
    return {s["ShardId"]: s for s in listing["Shards"]}


async def read_all(kinesis: Any, arn: str, shard_id: str) -> list[tuple[str, str]]:
    """``(sequence number, data)`` of every record of a shard, from its start."""
    answer = await kinesis.get_shard_iterator(
        StreamARN=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )
    got = await kinesis.get_records(
        StreamARN=arn, ShardIterator=answer["ShardIterator"], Limit=10_000
    )
    return [(r["SequenceNumber"], r["Data"].decode()) for r in got["Records"]]


@pytest.fixture(autouse=True)
def events() -> Iterator[None]:
    stream_handlers.EVENTS.clear()
    stream_handlers.ARRIVED.clear()
    yield
    stream_handlers.GATE = None
    stream_handlers.EVENTS.clear()
    stream_handlers.ARRIVED.clear()


async def test_the_emulator_writes_only_to_open_shards_and_keeps_the_parents_records(
    aws: Any,
) -> None:
    # What the reshard test relies on, as Kinesis does it: after a split or a merge a key is
    # written to the open shard whose range holds it, and the closed parents keep their
    # records. moto on its own keeps writing into the closed parent, moves a split parent's
    # records to the children and copies merged parents' records into the child
    # (tests/fixtures/moto_server.py).
    keys = keys_per_quarter(1)[:3]  # after the split: in shards 2, 3 and 1

    async def put_round(n: int) -> list[str]:
        answers = await put(kinesis, arn, [(k, f"{k}:{n}") for k in keys])
        return [a["ShardId"] for a in answers]

    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis, shards=2, prefix="reshard")
        assert await put_round(0) == [shard(0), shard(0), shard(1)]
        await kinesis.split_shard(
            StreamARN=arn, ShardToSplit=shard(0), NewStartingHashKey=str(SPLIT_AT)
        )
        assert await put_round(1) == [shard(2), shard(3), shard(1)]
        await kinesis.merge_shards(
            StreamARN=arn, ShardToMerge=shard(3), AdjacentShardToMerge=shard(1)
        )
        assert await put_round(2) == [shard(2), shard(4), shard(4)]

        a, b, c = keys
        contents = {i: await read_all(kinesis, arn, shard(i)) for i in range(5)}
        assert contents == {
            0: [("1", f"{a}:0"), ("2", f"{b}:0")],
            1: [("1", f"{c}:0"), ("2", f"{c}:1")],
            2: [("1", f"{a}:1"), ("2", f"{a}:2")],
            3: [("1", f"{b}:1")],
            4: [("1", f"{b}:2"), ("2", f"{c}:2")],
        }
        shards = await shards_of(kinesis, arn)
        ending = {
            i: s["SequenceNumberRange"].get("EndingSequenceNumber") for i, s in shards.items()
        }
        assert ending == {
            shard(0): "2",
            shard(1): "2",
            shard(2): None,
            shard(3): "1",
            shard(4): None,
        }
        assert shards[shard(2)]["ParentShardId"] == shard(0)
        assert shards[shard(4)]["ParentShardId"] == shard(3)
        assert shards[shard(4)]["AdjacentParentShardId"] == shard(1)


async def test_a_split_and_a_merge_while_records_flow_keep_the_order_of_each_key(
    aws: Any, sqlite_store: SQLStore
) -> None:
    keys = keys_per_quarter(2)
    sent: list[tuple[str, str]] = []
    answers: list[dict[str, Any]] = []

    async def rounds(first: int, last: int) -> None:
        for n in range(first, last):
            items = [(k, f"{k}:{n}") for k in keys]
            sent.extend(items)
            answers.extend(await put(kinesis, arn, items))

    mapping = """    starting_position: TRIM_HORIZON
    batch_size: 5
    parallelization_factor: 2"""
    # The function holds every batch until the stream was split and merged: the parents
    # still have records to deliver when their children get their first ones, and a child
    # read too early would have batches at the gate beside its parents' first ones.
    gate = stream_handlers.GATE = asyncio.Event()
    async with aws.client("kinesis") as kinesis:
        arn = await make_stream(kinesis, shards=2, prefix="reshard")
        config = kinesis_config(arn, aws.endpoint, "gated", mapping, timeout=60)
        async with run_router(config, sqlite_store):
            await rounds(0, 10)

            def holding() -> set[str]:
                return {s for s, _, _ in delivered(stream_handlers.ARRIVED)}

            await eventually(
                lambda: holding() == {shard(0), shard(1)}, what="a batch of each shard held"
            )
            await kinesis.split_shard(
                StreamARN=arn, ShardToSplit=shard(0), NewStartingHashKey=str(SPLIT_AT)
            )
            await rounds(10, 20)
            await kinesis.merge_shards(
                StreamARN=arn, ShardToMerge=shard(3), AdjacentShardToMerge=shard(1)
            )
            await rounds(20, 30)
            # Room for a few listings of the shards (shard_sync_interval 0.5 s) before the
            # gate opens: a child started before its parents ended would show up here.
            await asyncio.sleep(2)
            assert holding() == {shard(0), shard(1)}
            gate.set()
            wanted = {data for _, data in sent}
            await eventually(
                lambda: {d for _, _, d in delivered()} >= wanted,
                timeout=60,
                what=f"all {len(wanted)} records delivered",
            )
            row = await sqlite_store.get_mapping_by_name("clicks")
            assert row is not None
            last: dict[str, str] = {}
            for answer in answers:
                last[answer["ShardId"]] = answer["SequenceNumber"]
            open_rows = {shard(2): last[shard(2)], shard(4): last[shard(4)]}

            async def shard_rows() -> dict[str, str]:
                rows = await sqlite_store.get_checkpoints(row.uuid)
                return {k: v for k, v in rows.items() if k.startswith("shardId-")}

            async def cleaned_up() -> bool:
                return await shard_rows() == open_rows

            # The closed shards' rows go once their children have rows of their own.
            await eventually(cleaned_up, what=f"checkpoints only of the open shards {open_rows}")
            async with sqlite_store.engine.connect() as conn:
                leases = await conn.execute(
                    sa.select(t.leases.c.key).where(t.leases.c.key.like(f"kinesis:{row.uuid}:%"))
                )
                held = sorted(k.rsplit(":", 1)[1] for (k,) in leases)
            assert held == [shard(2), shard(4)]

    # Records put after the split went to its children, after the merge to the merged shard.
    by_round = [answers[i : i + len(keys)] for i in range(0, len(answers), len(keys))]
    assert {a["ShardId"] for r in by_round[:10] for a in r} == {shard(0), shard(1)}
    assert {a["ShardId"] for r in by_round[10:20] for a in r} == {shard(1), shard(2), shard(3)}
    assert {a["ShardId"] for r in by_round[20:] for a in r} == {shard(2), shard(4)}
    # Each record was delivered from the shard it was written to.
    written = {data: a["ShardId"] for (_, data), a in zip(sent, answers, strict=True)}
    assert all(written[data] == s for s, _, data in delivered())
    # First deliveries in put order per key, across both reshards.
    first: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for _, key, data in delivered():
        if data not in seen:
            seen.add(data)
            first[key].append(data)
    assert first == {k: [f"{k}:{n}" for n in range(30)] for k in keys}
