"""The pure parts of the stream sources: which sequence number may be checkpointed, which
shards are readable and where each starts (children after parents), how replicas share
shards."""

from __future__ import annotations

import pytest

from connectors.aws.streams.leases import (
    dead_members,
    fair_share,
    live_members,
    member_row,
    should_yield,
    to_take,
)
from connectors.aws.streams.progress import SHARD_END, SKIPPED, ShardProgress
from connectors.aws.streams.shards import Shard, ShardPlan, Start, parse_checkpoint
from connectors.aws.streams.source import epoch_seconds


def test_checkpoint_advances_over_the_contiguous_acknowledged_prefix() -> None:
    progress = ShardProgress()
    assert progress.checkpoint is None
    progress.fetched(["10", "11", "12", "13"])
    assert progress.ack("11")  # out of order: a later lane finished first
    assert progress.checkpoint is None
    assert progress.ack("10")
    assert progress.checkpoint == "11"
    assert not progress.ack("10")  # twice
    assert progress.ack_run(["12", "13"])
    assert progress.checkpoint == "13"
    assert progress.drained.is_set()
    assert not progress.finished
    progress.end()
    assert progress.checkpoint == SHARD_END


def test_acks_of_records_not_read_here_are_ignored() -> None:
    progress = ShardProgress("5")
    progress.fetched(["7", "9"])
    assert not progress.ack("3")
    assert not progress.ack("12")
    assert progress.checkpoint == "5"
    assert not progress.dirty
    assert progress.ack("7")
    assert progress.dirty


def test_a_shard_at_its_end_is_finished_only_once_everything_is_acknowledged() -> None:
    progress = ShardProgress()
    progress.fetched(["1", "2"])
    progress.end()
    assert not progress.finished and not progress.drained.is_set()
    progress.ack_run(["1", "2"])
    assert progress.finished and progress.checkpoint == SHARD_END


SPLIT = [Shard("p", ending="9"), Shard("a", ("p",)), Shard("b", ("p",))]
MERGE = [Shard("x", ending="5"), Shard("y", ending="6"), Shard("m", ("x", "y"))]


@pytest.mark.parametrize(
    ("shards", "rows", "readable"),
    [
        (SPLIT, {}, ["p"]),
        (SPLIT, {"p": "7"}, ["p"]),
        (SPLIT, {"p": SHARD_END}, ["a", "b"]),
        (SPLIT, {"a": "3"}, ["a", "b"]),  # a child started: the parent is finished
        (MERGE, {"x": SHARD_END}, ["y"]),
        (MERGE, {"x": SHARD_END, "y": SHARD_END}, ["m"]),
        (MERGE, {"m": SHARD_END}, []),
        ([Shard("c", ("gone",))], {}, ["c"]),  # a parent trimmed from the stream
    ],
)
def test_children_are_readable_after_all_their_parents(
    shards: list[Shard], rows: dict[str, str], readable: list[str]
) -> None:
    assert [s.id for s in ShardPlan(shards, rows).readable()] == readable


def test_where_shards_start() -> None:
    plan = ShardPlan(SPLIT, {"p": SHARD_END})
    child = plan.shards["a"]
    assert plan.start(child, "LATEST", None, 100.0, True) == Start(
        "TRIM_HORIZON", marker="TRIM_HORIZON"
    )
    fresh = ShardPlan(SPLIT, {})
    assert fresh.start(fresh.shards["p"], "LATEST", None, 100.0, True).skip
    assert fresh.start(fresh.shards["p"], "TRIM_HORIZON", None, 100.0, True).iterator == (
        "TRIM_HORIZON"
    )
    skipped = ShardPlan(SPLIT, {"p": SKIPPED})
    pinned = skipped.start(skipped.shards["a"], "LATEST", None, 100.0, True)
    assert (pinned.iterator, pinned.timestamp, pinned.marker) == (
        "AT_TIMESTAMP",
        100.0,
        "AT_TIMESTAMP:100.000",
    )
    assert skipped.start(skipped.shards["a"], "LATEST", None, 100.0, False) == Start(
        "LATEST", marker="LATEST"
    )
    resumed = ShardPlan(SPLIT, {"p": "42"})
    assert resumed.start(resumed.shards["p"], "LATEST", None, 1.0, True) == Start(
        "AFTER_SEQUENCE_NUMBER", sequence="42"
    )


def test_finished_parents_are_cleaned_once_all_children_have_rows() -> None:
    assert ShardPlan(SPLIT, {"p": SHARD_END, "a": "TRIM_HORIZON"}).cleanable() == []
    rows = {"p": SHARD_END, "a": "TRIM_HORIZON", "b": "4"}
    assert ShardPlan(SPLIT, rows).cleanable() == ["p"]
    # With the parent's row gone, it stays finished through its children.
    assert [s.id for s in ShardPlan(SPLIT, {"a": "1", "b": "4"}).readable()] == ["a", "b"]


def test_a_checkpoint_row_that_means_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected a sequence number"):
        parse_checkpoint("yesterday")


@pytest.mark.parametrize(
    ("shards", "members", "floor_ceil"),
    [(8, 3, (2, 3)), (8, 4, (2, 2)), (8, 1, (8, 8)), (1, 3, (0, 1)), (0, 2, (0, 0))],
)
def test_fair_share(shards: int, members: int, floor_ceil: tuple[int, int]) -> None:
    assert fair_share(shards, members) == floor_ceil


def test_a_replica_takes_free_shards_up_to_its_fair_share() -> None:
    assert to_take(0, 8, 3) == 3
    assert to_take(3, 8, 3) == 0
    assert to_take(3, 8, 2) == 1  # a replica died: the others take its shards


@pytest.mark.parametrize(
    ("me", "held", "free", "yields"),
    [
        ("r1", {"r1": 3, "r2": 3, "r3": 2}, 0, False),  # balanced
        ("r2", {"r1": 3, "r2": 3, "r3": 2, "r4": 0}, 0, True),  # busiest, highest id
        ("r1", {"r1": 3, "r2": 3, "r3": 2, "r4": 0}, 0, False),  # r2 yields, not r1
        ("r2", {"r1": 3, "r2": 3, "r3": 2, "r4": 0}, 1, False),  # r4 takes the free one
        ("r1", {"r1": 8}, 0, False),  # alone
        ("r1", {"r1": 2, "r2": 2, "r3": 2, "r4": 2}, 0, False),
        # Nobody below the floor (2), but r1 holds more than the ceiling (3): a free shard
        # went to r3 instead of r2 while r1 gave shards up. r1 keeps yielding until 3, 3, 2.
        ("r1", {"r1": 4, "r2": 2, "r3": 2}, 0, True),
        ("r2", {"r1": 4, "r2": 2, "r3": 2}, 0, False),
        ("r1", {"r1": 3, "r2": 2, "r3": 2}, 0, False),
    ],
)
def test_the_busiest_replica_gives_one_shard_up_to_a_starving_one(
    me: str, held: dict[str, int], free: int, yields: bool
) -> None:
    assert should_yield(me, held, sum(held.values()) + free, free) is yields


def test_member_rows_age_out() -> None:
    rows = {
        "replica:a": member_row(100.0, 3),
        "replica:b": member_row(80.0, 5),
        "replica:c": "garbage",
        "shardId-000000000000": "12",
    }
    assert live_members(rows, 105.0, 10.0) == {"a": 3}
    # Rows of replicas past twice the lease, and rows that mean nothing, are deleted.
    assert dead_members(rows, 99.0, 10.0) == ["replica:c"]
    assert dead_members(rows, 115.0, 10.0) == ["replica:b", "replica:c"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1733101323.5, 1733101323.5),
        (1733101323, 1733101323.0),
        ("1733101323.25", 1733101323.25),
        ("2024-12-02T01:02:03Z", 1733101323.0),
        ("2024-12-02T01:02:03.500+00:00", 1733101323.5),
    ],
)
def test_response_timestamps_are_read_as_epoch_seconds(value: object, seconds: float) -> None:
    assert epoch_seconds(value) == seconds
