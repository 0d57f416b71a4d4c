"""Tumbling windows of a stream source: the window fields of its events, the state its
function answers, and the final invocation of each shard's window (the rules are in
:mod:`.windows`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from connectors.aws.streams.progress import ShardProgress
from connectors.aws.streams.windows import (
    FINAL_LANE,
    WINDOW_PREFIX,
    ShardWindow,
    check_state,
    window_start,
)
from router.abc import Sink
from router.models import Record


class Windowing:
    """The window part of :class:`~connectors.aws.streams.source.StreamSource`."""

    arn: str
    _window: float
    """``tumbling_window`` seconds (0: none)."""
    _windows: dict[str, ShardWindow]

    if TYPE_CHECKING:

        async def _delete_rows(self, keys: list[str]) -> None: ...

    def window_event(self, records: Sequence[Record]) -> dict[str, Any] | None:
        """The event of ``records`` with its window's fields; None without a window."""
        if not self._window or not records:
            return None
        lane: Any = records[0].lane
        window = self._windows.get(lane[0])
        if window is None:
            return None
        final = lane[-1] == FINAL_LANE
        event: dict[str, Any] = {"Records": [] if final else [r.data for r in records]}
        event.update(window.event_fields(lane[0], self.arn, final))
        return event

    def check_response(self, records: Sequence[Record], response: Any) -> str | None:
        """With a tumbling window, the function's answer must carry its ``state``: kept for
        the next invocation of the window (the final one's is dropped)."""
        if not self._window or not records:
            return None
        lane: Any = records[0].lane
        window = self._windows.get(lane[0])
        if window is None or lane[-1] == FINAL_LANE:
            return None
        state, problem = check_state(response)
        if state is not None:
            window.answered(records[-1].position, state)
        return problem

    async def _window_closed(self, shard_id: str) -> None:
        """The final invocation of the shard's window was acknowledged: its row goes."""
        window = self._windows.get(shard_id)
        if window is None:
            return
        window.ending = True  # a checkpoint write meanwhile must not store its row again
        await self._delete_rows([WINDOW_PREFIX + shard_id])
        if self._windows.get(shard_id) is window:
            del self._windows[shard_id]
        window.closed.set()

    async def _put_windowed(
        self, sink: Sink, shard_id: str, progress: ShardProgress, records: list[Record]
    ) -> None:
        """Put ``records`` window by window: the records of a later window only once the
        open window's final invocation was acknowledged (see :mod:`.windows`)."""
        length = self._window
        i = 0
        while i < len(records):
            start = window_start(records[i].arrival, length)
            window = self._windows.get(shard_id)
            if window is not None and start > window.start:
                await self._close_window(sink, shard_id, progress)
                window = None
            if window is None:
                window = self._windows[shard_id] = ShardWindow(start, length)
            j = i + 1
            while j < len(records) and window_start(records[j].arrival, length) <= window.start:
                j += 1
            group = records[i:j]
            progress.fetched([r.position for r in group])
            await sink.put(group)
            i = j

    async def _close_window(
        self, sink: Sink, shard_id: str, progress: ShardProgress, *, early: bool = False
    ) -> None:
        """Invoke the window's final invocation once all its records are acknowledged, and
        wait for its acknowledgement."""
        window = self._windows[shard_id]
        await progress.drained.wait()
        window.early = early
        sequence = progress.acked or ""
        final = Record(
            lane=(shard_id, FINAL_LANE),
            position=sequence,
            # What batch_info of an on-failure record reads; the event carries no record.
            data={
                "kinesis": {"sequenceNumber": sequence},
                "dynamodb": {"SequenceNumber": sequence},
            },
            identifier=sequence,
            size=512,
            arrival=time.time(),
            unfiltered=True,
        )
        await sink.put([final])
        await window.closed.wait()
