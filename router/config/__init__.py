"""Configuration: YAML loading with strict, located validation; rows <-> configs; apply.

See ``docs/configuration.md`` for the file format.
"""

from __future__ import annotations

from router.config.apply import (
    ApplyPlan,
    FieldChange,
    PlannedCreate,
    PlannedDelete,
    PlannedUpdate,
    apply_config,
    apply_plan,
    plan_apply,
)
from router.config.checks import check_functions, load_checked_config
from router.config.convert import RouterSettings
from router.config.jsonschema import json_schema
from router.config.loader import RouterConfig, config_files, load_config, load_config_text
from router.config.rows import mapping_from_row, row_from_mapping

__all__ = [
    "ApplyPlan",
    "FieldChange",
    "PlannedCreate",
    "PlannedDelete",
    "PlannedUpdate",
    "RouterConfig",
    "RouterSettings",
    "apply_config",
    "apply_plan",
    "check_functions",
    "config_files",
    "json_schema",
    "load_checked_config",
    "load_config",
    "load_config_text",
    "mapping_from_row",
    "plan_apply",
    "row_from_mapping",
]
