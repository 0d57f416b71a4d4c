"""A handler module that fails at import time (init error)."""

from __future__ import annotations

from typing import Any

raise RuntimeError("import-time failure")


def handler(event: Any, context: Any) -> None:  # pragma: no cover - never importable
    return None
