"""A handler module whose import ends the process (a crash in init)."""

from __future__ import annotations

import os
from typing import Any

os._exit(2)


def handler(event: Any, context: Any) -> None:  # pragma: no cover - never importable
    return None
