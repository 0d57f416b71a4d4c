"""The contiguous-commit tracker and the operator reset rows (pure, table-driven)."""

from __future__ import annotations

import pytest

from connectors.kafka.offsets import (
    PartitionOffsets,
    ResetTarget,
    mirror_rows,
    plan_resets,
)

# (fetched offsets, acked offsets in order, expected committable after each ack)
TRACKER_CASES = [
    pytest.param([0, 1, 2], [0, 1, 2], [1, 2, 3], id="in-order"),
    pytest.param([0, 1, 2, 3], [2, 3, 0, 1], [0, 0, 1, 4], id="later-lane-first"),
    pytest.param([5, 6, 7], [6, 5, 7], [5, 7, 8], id="starts-mid-log"),
    pytest.param([0, 2, 4], [2, 0, 4], [0, 4, 5], id="gaps-compacted-topic"),
    pytest.param([0, 1, 2], [1, 1, 0], [0, 0, 2], id="duplicate-ack-ignored"),
    pytest.param([3, 4], [1, 9, 3, 4], [3, 3, 4, 5], id="unknown-offsets-ignored"),
]


@pytest.mark.parametrize(("fetched", "acks", "expected"), TRACKER_CASES)
def test_committable_is_first_unacked_offset(
    fetched: list[int], acks: list[int], expected: list[int]
) -> None:
    tracker = PartitionOffsets()
    assert tracker.committable is None
    assert not tracker.dirty
    tracker.fetched(fetched)
    assert tracker.committable == fetched[0]
    seen = []
    for offset in acks:
        tracker.ack(offset)
        seen.append(tracker.committable)
    assert seen == expected


# (fetched offsets, runs acked in order, expected committable after each run)
RUN_CASES = [
    pytest.param([0, 1, 2, 3], [[0, 1], [2, 3]], [2, 4], id="runs-in-order"),
    pytest.param([0, 1, 2, 3], [[2, 3], [0, 1]], [0, 4], id="later-run-first"),
    pytest.param([0, 1, 2, 3, 4], [[0, 2], [1], [3, 4]], [1, 3, 5], id="interleaved-lanes"),
    pytest.param([0, 2, 4], [[0, 2, 4]], [5], id="gaps"),
    pytest.param([5, 6], [[3, 4], [5, 6], [5, 6]], [5, 7, 7], id="stale-and-repeated"),
    pytest.param([0, 1, 2], [[1], [0, 1, 2]], [0, 3], id="run-over-done-offset"),
]


@pytest.mark.parametrize(("fetched", "runs", "expected"), RUN_CASES)
def test_ack_run_as_acking_each_offset(
    fetched: list[int], runs: list[list[int]], expected: list[int]
) -> None:
    by_run, by_offset = PartitionOffsets(), PartitionOffsets()
    by_run.fetched(fetched)
    by_offset.fetched(fetched)
    seen = []
    for run in runs:
        changed = by_run.ack_run(run)
        each = [by_offset.ack(o) for o in run]  # every offset, no short cut
        assert changed == any(each)
        assert by_run.committable == by_offset.committable
        assert by_run.outstanding == by_offset.outstanding
        seen.append(by_run.committable)
    assert seen == expected


def test_long_runs_keep_bookkeeping_small() -> None:
    tracker = PartitionOffsets()
    for start in range(0, 100_000, 1000):
        tracker.fetched(range(start, start + 1000))
        if start:
            # Acknowledge the previous fetch while this one is outstanding.
            assert tracker.ack_run(list(range(start - 1000, start)))
        assert tracker.committable == start
    assert tracker.outstanding == 1000
    assert len(tracker._pending) < 10_000
    assert tracker.ack_run(list(range(99_000, 100_000)))
    assert tracker.committable == 100_000
    assert tracker.outstanding == 0


def test_fetch_after_everything_acked_continues_from_next() -> None:
    tracker = PartitionOffsets()
    tracker.fetched([0, 1])
    tracker.ack(0)
    tracker.ack(1)
    assert tracker.committable == 2
    assert tracker.outstanding == 0
    tracker.fetched([2, 3])
    assert tracker.committable == 2
    tracker.ack(3)
    assert tracker.committable == 2
    assert tracker.outstanding == 1
    tracker.ack(2)
    assert tracker.committable == 4


def test_dirty_until_committed() -> None:
    tracker = PartitionOffsets(start=10)
    assert tracker.committable == 10
    assert tracker.dirty  # a seek target must be committed even before any record
    tracker.committed = 10
    assert not tracker.dirty
    tracker.fetched([10])
    assert not tracker.dirty
    tracker.ack(10)
    assert tracker.dirty
    tracker.committed = 11
    assert not tracker.dirty


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("42", ResetTarget(offset=42)),
        ("TRIM_HORIZON", ResetTarget(earliest=True)),
        ("earliest", ResetTarget(earliest=True)),
        ("LATEST", ResetTarget(latest=True)),
        ("2024-01-02T03:04:05Z", ResetTarget(timestamp_ms=1704164645000)),
        ("2024-01-02T03:04:05", ResetTarget(timestamp_ms=1704164645000)),
        ("2024-01-02T05:04:05.5+02:00", ResetTarget(timestamp_ms=1704164645500)),
    ],
)
def test_reset_values(text: str, target: ResetTarget) -> None:
    assert ResetTarget.parse(text) == target


@pytest.mark.parametrize("text", ["-1", "soon", ""])
def test_bad_reset_values(text: str) -> None:
    with pytest.raises(ValueError):
        ResetTarget.parse(text)


def test_mirrored_rows_are_not_resets() -> None:
    rows = mirror_rows({("orders", 0): 10, ("orders", 1): 7})
    assert rows == {
        "orders:0": "10",
        "_mirrored:orders:0": "10",
        "orders:1": "7",
        "_mirrored:orders:1": "7",
    }
    plan = plan_resets(rows, ["orders"])
    assert not plan
    assert plan.keys == ()


def test_edited_and_explicit_resets() -> None:
    rows = {
        **mirror_rows({("orders", 0): 10, ("orders", 1): 7, ("gone", 0): 3}),
        "orders:1": "2",  # an operator's UPDATE of the mirrored row
        "orders:5": "0",  # an operator's INSERT for a partition never mirrored
        "gone:0": "1",  # a topic no longer subscribed: ignored
        "reset:audit:*": "TRIM_HORIZON",
        "reset:audit:3": "LATEST",
        "reset:*": "2024-01-02T03:04:05Z",
        "reset:audit:x": "1",  # malformed key
        "reset:audit:4": "whenever",  # malformed value
        "shard-0001": "123",  # somebody else's row
    }
    plan = plan_resets(rows, ["orders", "audit"])
    assert plan.target("orders", 0) == ResetTarget(timestamp_ms=1704164645000)  # reset:*
    assert plan.target("orders", 1) == ResetTarget(offset=2)
    assert plan.target("orders", 5) == ResetTarget(offset=0)
    assert plan.target("audit", 3) == ResetTarget(latest=True)
    assert plan.target("audit", 0) == ResetTarget(earliest=True)
    assert sorted(plan.keys) == [
        "reset:*",
        "reset:audit:*",
        "reset:audit:3",
        "reset:audit:4",
        "reset:audit:x",
    ]
    assert len(plan.problems) == 2
