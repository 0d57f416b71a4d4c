"""Exponential backoff with full jitter, shared by every retry loop of the router."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        wait = random.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return wait


FUNCTION_ERROR_DELAYS = (60.0, 120.0)
"""Lambda's wait before the first and the second retry of an asynchronous event whose
function returned an error."""
THROTTLE_FIRST_DELAY = 1.0
THROTTLE_MAX_DELAY = 300.0
"""Lambda's wait after a throttled (429) or system-error (5xx) attempt of an asynchronous
event: 1 s after the first, doubling up to 5 minutes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LambdaAsyncRetry:
    """Lambda's retry timing for asynchronous invocation, every duration times ``scale``
    (``router.ingress.retry_delay_scale``: 1 in production, smaller in tests).

    A function error is retried after 1 minute, then after 2 minutes. A throttle or a system
    error is retried after 1 s, 2 s, 4 s, ... up to 5 minutes between attempts, for as long as
    the event's maximum age allows. No jitter: the delays are Lambda's."""

    scale: float = 1.0

    def after_error(self, retry: int) -> float:
        """Seconds before retry ``retry`` (1: the first) after a function error."""
        index = min(max(retry, 1), len(FUNCTION_ERROR_DELAYS)) - 1
        return self.scale * FUNCTION_ERROR_DELAYS[index]

    def after_throttle(self, attempt: int) -> float:
        """Seconds before the next try after throttled / system-error attempt ``attempt``
        (1: the first)."""
        exponent = min(max(attempt, 1) - 1, 30)
        return self.scale * min(THROTTLE_MAX_DELAY, THROTTLE_FIRST_DELAY * float(2**exponent))

    def max_age(self, seconds: float) -> float:
        """The maximum event age as applied (negative: none)."""
        return seconds if seconds < 0 else seconds * self.scale
