"""Lambda's retry timing for asynchronous invocation, as the durable queue applies it."""

from __future__ import annotations

from router.backoff import LambdaAsyncRetry


def test_function_errors_wait_one_then_two_minutes() -> None:
    timing = LambdaAsyncRetry()
    assert [timing.after_error(n) for n in (1, 2)] == [60.0, 120.0]


def test_throttles_wait_from_one_second_doubling_to_five_minutes() -> None:
    timing = LambdaAsyncRetry()
    waits = [timing.after_throttle(n) for n in range(1, 13)]
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert timing.after_throttle(10_000) == 300


def test_the_scale_shrinks_every_duration() -> None:
    timing = LambdaAsyncRetry(scale=0.01)
    assert timing.after_error(1) == 0.6
    assert timing.after_error(2) == 1.2
    assert timing.after_throttle(1) == 0.01
    assert timing.after_throttle(20) == 3.0
    assert timing.max_age(21600) == 216.0
    assert timing.max_age(-1) == -1  # no limit stays no limit
