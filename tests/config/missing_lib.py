"""A plug-in module whose optional library is not installed (for the install-hint test): it
declares its library as the connector packages do."""

from __future__ import annotations

from router.registry import require

require("fancylib_not_installed", extra="fancy")
