"""A mapping's ``last_processing_result`` as its pipeline, delivery and source report it."""

from __future__ import annotations

from collections.abc import Callable


class MappingStatus:
    """The latest result (``OK``, ``PROBLEM: ...``, ``No records processed``). A change is
    passed on to ``on_change`` (the router writes it to the store)."""

    __slots__ = ("on_change", "result")

    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        self.result = "No records processed"
        self.on_change = on_change

    def report(self, result: str) -> None:
        if result != self.result:
            self.result = result
            if self.on_change is not None:
                self.on_change(result)
