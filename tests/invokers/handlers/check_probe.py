"""A module whose import the ``isolation: process`` check must run outside the router."""

from __future__ import annotations

from typing import Any


def handler(event: Any, context: Any) -> None:
    return None
