"""A handler module whose import takes a minute (an init that times out)."""

from __future__ import annotations

import time
from typing import Any

time.sleep(60)


def handler(event: Any, context: Any) -> None:  # pragma: no cover - never reached in time
    return None
