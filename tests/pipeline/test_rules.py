"""The pure rules: batch cutting, batching window, partial batch responses, backoff."""

from __future__ import annotations

from typing import Any

import pytest

from router.errors import PartialBatchFailure
from router.models import MAX_PAYLOAD_BYTES
from router.pipeline import Backoff, BatchPolicy
from router.pipeline.batch_responses import (
    failed_identifiers,
    first_failed_index,
    names_no_failure,
)
from router.pipeline.batcher import EVENT_OVERHEAD

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("policy", "count", "nbytes", "oldest", "now", "expected"),
    [
        # batch size reached: cut now, whatever the window
        (BatchPolicy(batch_size=10, window=5), 10, 1000, 100.0, 100.0, 0.0),
        (BatchPolicy(batch_size=10, window=5), 12, 1000, 100.0, 100.0, 0.0),
        # window counted from the oldest waiting record
        (BatchPolicy(batch_size=10, window=5), 3, 1000, 100.0, 101.0, 4.0),
        (BatchPolicy(batch_size=10, window=5), 3, 1000, 100.0, 105.0, 0.0),
        (BatchPolicy(batch_size=10, window=5), 3, 1000, 100.0, 200.0, 0.0),
        # no window: cut as soon as anything waits
        (BatchPolicy(batch_size=10), 1, 100, 100.0, 100.0, 0.0),
        # 6 MB reached (with the event envelope): cut now
        (BatchPolicy(batch_size=10, window=5), 3, 6 * MB - EVENT_OVERHEAD, 100.0, 100.0, 0.0),
        (BatchPolicy(batch_size=10, window=5), 1, 7 * MB, 100.0, 100.0, 0.0),
        (BatchPolicy(batch_size=10, window=5), 3, 6 * MB - EVENT_OVERHEAD - 1, 100.0, 100.0, 5.0),
    ],
)
def test_wait_time(
    policy: BatchPolicy, count: int, nbytes: int, oldest: float, now: float, expected: float
) -> None:
    assert policy.wait_time(count, nbytes, oldest, now) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("batch_size", "sizes", "expected"),
    [
        (10, [100] * 15, 10),
        (10, [100] * 3, 3),
        (1, [100, 100], 1),
        # 6 MB: the batch stops before the record that would not fit
        (10, [3 * MB, 3 * MB], 1),
        (10, [2 * MB, 2 * MB, 2 * MB], 2),
        (10, [2 * MB, 2 * MB, 2 * MB - EVENT_OVERHEAD - 6], 3),
        (10, [2 * MB, 2 * MB, 2 * MB - EVENT_OVERHEAD - 5], 2),
        # a record over 6 MB goes alone, first or not
        (10, [7 * MB, 100], 1),
        (10, [100, 7 * MB], 1),
        (10, [MAX_PAYLOAD_BYTES + 1], 1),
        # filtered entries (None) ride along, up to the next record that does not fit
        (10, [None, None], 2),
        (1, [None, 100, None, None, 100], 4),
        (2, [100, None, 100, None, 100], 4),
        (10, [None, 3 * MB, None, 3 * MB, None], 3),
        (10, [None, 7 * MB, None, 100], 3),
    ],
)
def test_cut(batch_size: int, sizes: list[int | None], expected: int) -> None:
    assert BatchPolicy(batch_size=batch_size).cut(sizes) == expected


BATCH = ["a", "b", "c"]
MALFORMED: list[Any] = [
    {"batchItemFailures": [{"itemIdentifier": ""}]},
    {"batchItemFailures": [{"itemIdentifier": None}]},
    {"batchItemFailures": [{"itemIdentifer": "a"}]},  # misspelt key
    {"batchItemFailures": [{}]},
    {"batchItemFailures": [{"itemIdentifier": "zz"}]},
    {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "zz"}]},
    {"batchItemFailures": [{"itemIdentifier": 7}]},
    {"batchItemFailures": ["a"]},
    {"batchItemFailures": {"itemIdentifier": "a"}},
    {"batchItemFailures": "a"},
    [{"itemIdentifier": "a"}],
    [],
    "ok",
    "a",
    42,
    True,
]


@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ("", set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": None}, set()),
        ({"other": 1}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "c"}, {"itemIdentifier": "a"}]}, {"a", "c"}),
        ({"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "b"}]}, {"b"}),
    ],
)
def test_failed_identifiers(response: Any, failed: set[str]) -> None:
    assert failed_identifiers(response, set(BATCH)) == failed
    # Whole-batch successes are recognised without the batch's identifiers.
    assert names_no_failure(response) == (not failed)


@pytest.mark.parametrize(
    ("item", "failed"),
    [
        ({"partition": "orders-0", "offset": 5}, {"orders-0:5"}),
        ("orders-0:5", {"orders-0:5"}),
    ],
)
def test_kafka_identifiers_as_object_or_string(item: Any, failed: set[str]) -> None:
    response = {"batchItemFailures": [{"itemIdentifier": item}]}
    assert failed_identifiers(response, {"orders-0:4", "orders-0:5"}) == failed


def test_kafka_object_identifier_not_in_the_batch_is_malformed() -> None:
    response = {"batchItemFailures": [{"itemIdentifier": {"partition": "orders-0", "offset": 9}}]}
    with pytest.raises(PartialBatchFailure):
        failed_identifiers(response, {"orders-0:4"})


@pytest.mark.parametrize("response", MALFORMED, ids=repr)
def test_malformed_response_fails_the_whole_batch(response: Any) -> None:
    with pytest.raises(PartialBatchFailure):
        failed_identifiers(response, set(BATCH))
    assert not names_no_failure(response)


@pytest.mark.parametrize(("failed", "index"), [({"a"}, 0), ({"c", "b"}, 1), ({"c"}, 2), (set(), 3)])
def test_first_failed_index(failed: set[str], index: int) -> None:
    assert first_failed_index(BATCH, failed) == index


def test_backoff_is_capped_jitter_and_honours_retry_after() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    for attempt in range(40):
        assert 0 <= backoff.delay(attempt) <= min(8.0, 2.0**attempt)
    assert backoff.delay(1, retry_after=5.0) >= 5.0
    assert backoff.delay(1, retry_after=100.0) <= 8.0


def test_infinite_retries_are_capped_when_the_source_says_so_and_a_destination_is_set() -> None:
    from dataclasses import replace

    from router.abc import SourceTraits
    from router.models import FunctionConfig, MappingConfig, PluginSettings, SourceKind, SourceSpec
    from router.pipeline import Backoff, Counters
    from router.pipeline.backpressure import Backpressure
    from router.pipeline.status import MappingStatus
    from router.pipeline.stream import StreamDelivery
    from tests.pipeline.fakes import FakeSource, RecordingDestination

    source = FakeSource(SourceKind.STREAM)
    capped = replace(source.traits_for(source.settings), retry_cap_with_destination=10)
    source.traits_for = lambda settings: capped  # type: ignore[method-assign]
    mapping = MappingConfig(
        name="m",
        function="f",
        source=SourceSpec(type="fake", settings=PluginSettings()),
        maximum_retry_attempts=-1,
    )
    function = FunctionConfig(name="f", invoker="python", settings=PluginSettings())

    def delivery(on_failure: RecordingDestination | None) -> StreamDelivery:
        return StreamDelivery(
            mapping=mapping,
            function=function,
            source=source,
            invoker=None,  # type: ignore[arg-type]
            on_failure=on_failure,
            on_success=None,
            backoff=Backoff(),
            counters=Counters(),
            stopping=None,  # type: ignore[arg-type]
            status=MappingStatus(),
            room=Backpressure(1),
        )

    assert isinstance(capped, SourceTraits)
    assert delivery(RecordingDestination()).max_retries == 10
    assert delivery(None).max_retries == -1
