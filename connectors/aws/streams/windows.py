"""Tumbling windows (``tumbling_window`` seconds): pure bookkeeping, tested table-driven.

A record belongs to the window ``[floor(arrival / T) * T, + T)`` of its arrival time (the
time the stream took it), as Lambda's windows are aligned. Each shard has at most one open
window. Invocations of a window carry the ``state`` the function returned last (``{}`` at
first); the window's last invocation (``isFinalInvokeForWindow``, no records) comes once the
reader saw a record of a later window, or found nothing more while the window's end had
passed, or the shard ended (then ``isWindowTerminatedEarly`` if the end had not come).

The state is stored beside the shard's checkpoint, in the same write, under
``window:<shard id>``: the state the function returned for the last batch acknowledged
(not one answered and not yet acknowledged), so that after a restart the shard is read
again after its checkpoint with the state that goes with it.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

import orjson

WINDOW_PREFIX = "window:"
"""Checkpoint rows of open windows: ``window:<shard id>``."""
FINAL_LANE = "final"
"""Second part of the lane of a window's final invocation: ``(shard id, "final")``."""


def window_start(arrival: float, length: float) -> float:
    return math.floor(arrival / length) * length


def iso(when: float) -> str:
    """``2020-12-09T07:04:00Z`` (as Lambda writes window bounds)."""
    moment = datetime.fromtimestamp(when, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class ShardWindow:
    """The open window of one shard."""

    __slots__ = ("_answers", "closed", "early", "ending", "length", "start", "state")

    def __init__(self, start: float, length: float, state: dict[str, Any] | None = None) -> None:
        self.start = start
        self.length = length
        self.state: dict[str, Any] = {} if state is None else state
        """What the next invocation of the window carries."""
        self._answers: list[tuple[int, dict[str, Any]]] = []
        self.early = False
        self.ending = False
        """The final invocation was acknowledged; the row is being deleted."""
        self.closed = asyncio.Event()
        """Set once the final invocation was acknowledged."""

    @property
    def end(self) -> float:
        return self.start + self.length

    def answered(self, last_position: str, state: dict[str, Any]) -> None:
        """The function returned ``state`` for a batch ending at ``last_position``."""
        self.state = state
        self._answers.append((int(last_position), state))

    def row(self, acked: str | None, saved: str | None) -> str:
        """The row to store with a checkpoint at ``acked``: the state of the last batch
        answered at or before it (``saved``, the state stored before, when none is)."""
        state: Any = None
        if acked is not None and acked.isdigit():
            upto = int(acked)
            keep = 0
            for i, (position, answer) in enumerate(self._answers):
                if position <= upto:
                    state = answer
                    keep = i + 1
            del self._answers[:keep]
        if state is None:
            if saved is not None:
                return saved
            state = {}
        return orjson.dumps({"start": self.start, "state": state}).decode()

    def event_fields(self, shard_id: str, arn: str, final: bool) -> dict[str, Any]:
        return {
            "window": {"start": iso(self.start), "end": iso(self.end)},
            "state": self.state,
            "shardId": shard_id,
            "eventSourceARN": arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": final and self.early,
        }


def parse_row(value: str, length: float) -> ShardWindow:
    """The window a stored row holds; raises ValueError saying what is wrong."""
    try:
        data = orjson.loads(value)
        start = float(data["start"])
        state = data["state"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f'window row {value[:80]!r}: expected {{"start": <epoch seconds>, "state": '
            "{...}}; delete the row to start the window afresh"
        ) from e
    if isinstance(state, dict):
        return ShardWindow(start, length, state)
    raise ValueError(f"window row {value[:80]!r}: state is not an object")


def check_state(response: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``(state, None)`` from a windowed invocation's response, or ``(None, problem)``: as
    Lambda, a response without a ``state`` object is a failed invocation."""
    if not isinstance(response, dict) or not isinstance(response.get("state"), dict):
        return None, (
            "with a tumbling window the function must return an object with a state object, "
            'e.g. {"state": {"count": 3}} (optionally with batchItemFailures)'
        )
    state: dict[str, Any] = response["state"]
    return state, None
