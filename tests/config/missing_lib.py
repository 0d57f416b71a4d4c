"""A plug-in module whose optional library is not installed (for the install-hint test)."""

from __future__ import annotations

import fancylib_not_installed  # type: ignore[import-not-found]  # noqa: F401
