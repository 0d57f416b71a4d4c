"""Backpressure: how many records a mapping holds (taken from its source, not yet
acknowledged, released or dropped), and waiting while it holds as many as it may."""

from __future__ import annotations

import asyncio


class Backpressure:
    """A mapping's bound on the records it holds. The pipeline ``take``s room for what a
    source puts; whoever finishes records (acknowledged, released, dropped) ``give``s it
    back, which wakes a source waiting for room."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        """Records taken and not given back."""
        self._room = asyncio.Event()
        self._room.set()

    def free(self) -> int:
        """How many more records fit now without waiting."""
        return max(0, self.capacity - self.held)

    def full(self) -> bool:
        return self.held >= self.capacity

    async def wait_for_room(self) -> None:
        """Wait until there is room for at least one record."""
        while self.held >= self.capacity:
            self._room.clear()
            await self._room.wait()

    def take(self, n: int) -> None:
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n
        if self.held < self.capacity:
            self._room.set()
