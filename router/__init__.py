"""Event router: Lambda-style event source mappings, outside AWS."""

from __future__ import annotations

__version__ = "0.1.0"
