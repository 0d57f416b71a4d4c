"""The handler of the ports template's functions: returns what it got."""

from typing import Any


def handler(event: Any, context: Any) -> Any:
    return event
