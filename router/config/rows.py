"""Stored rows of ``event_source_mappings`` <-> :class:`~router.models.MappingConfig`.

A row is checked with exactly the rules of a YAML mapping (an operator may have edited it in
SQL); errors name the column: ``event_source_mappings[name=orders].batch_size: ...``.
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuid_module
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from router.config.convert import RouterSettings, build_mapping
from router.config.rules import stored_settings, yaml_is_integer
from router.config.schema import Locate
from router.config.yaml_lines import KeyPath, format_path
from router.errors import ConfigError, ConfigErrors, Location
from router.models import SETTING_COLUMNS, FunctionConfig, MappingConfig, MappingRow
from router.secrets import secret_policy

_COLUMN_OF = {"function": "function_name", "maximum_concurrency": "maximum_concurrency"}


def _row_locator(name: str) -> Locate:
    table = f"event_source_mappings[name={name}]"

    def locate(path: KeyPath, _enclosing: bool) -> Location:
        if path[:2] == ("source", "type"):
            path = ("source_type", *path[2:])
        elif path[:1] == ("source",):
            path = ("source_config", *path[1:])
        elif path and path[0] in _COLUMN_OF:
            path = (_COLUMN_OF[str(path[0])], *path[1:])
        return Location(path=format_path((table, *path)))

    return locate


def mapping_from_row(
    row: MappingRow,
    functions: Mapping[str, FunctionConfig] | None = None,
    *,
    settings: RouterSettings | None = None,
    resolve: bool = False,
) -> MappingConfig:
    """Validate a stored row with the same rules as YAML; raises :class:`ConfigErrors` whose
    paths name the column, e.g. ``event_source_mappings[name=orders].batch_size``.

    ``resolve`` reads the row's secret references (the row is about to run); one that cannot
    be read is an error at its column. A secret an operator wrote in place in SQL is
    accepted: it is in the store already."""
    locate = _row_locator(row.name)
    errors: list[ConfigError] = []
    source_config = row.source_config if isinstance(row.source_config, dict) else None
    if source_config is None:
        errors.append(ConfigError("must be a JSON object", locate(("source",), False)))
        source_config = {}
    if "type" in source_config:
        errors.append(
            ConfigError(
                "the source type belongs in the source_type column",
                locate(("source", "type"), False),
            )
        )
    raw: dict[str, Any] = {
        "name": row.name,
        "function": row.function_name,
        "source": {
            "type": row.source_type,
            **{k: v for k, v in source_config.items() if k != "type"},
        },
        "enabled": row.enabled,
    }
    for column, value in row.settings.items():
        if value is None:
            continue
        # A FLOAT column gives 60.0 back for an integer setting; the rule checks the range.
        if isinstance(value, float) and value.is_integer() and yaml_is_integer(column):
            value = int(value)
        raw[column] = value
    with secret_policy(allow_plaintext=True, resolve=resolve):
        mapping = build_mapping(
            raw,
            (),
            locate,
            errors,
            functions=functions,
            settings=settings or RouterSettings(),
            lenient=True,
        )
    if errors or mapping is None:
        raise ConfigErrors(errors)
    return replace(mapping, uuid=row.uuid, origin=row.origin)


CONFIG_COLUMNS = ("function_name", "source_type", "source_config", *SETTING_COLUMNS)
"""The columns a YAML mapping sets, besides ``enabled`` (which has its own rule)."""


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def config_digest(row: MappingRow) -> str:
    """A stable hash of the configuration columns (``enabled`` excluded)."""
    payload = {c: getattr(row, c) for c in CONFIG_COLUMNS}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def split_config_hash(value: str) -> tuple[str, bool | None]:
    """``config_hash`` is ``DIGEST:1`` or ``DIGEST:0``: the digest of the configuration
    columns and the ``enabled`` value the YAML had when it was last applied."""
    digest, sep, flag = (value or "").partition(":")
    if not sep or flag not in {"0", "1"}:
        return digest, None
    return digest, flag == "1"


def row_from_mapping(m: MappingConfig) -> MappingRow:
    """The row that stores ``m`` (every default written out); a new uuid if ``m`` has none."""
    row = MappingRow(
        uuid=m.uuid or str(uuid_module.uuid4()),
        name=m.name,
        function_name=m.function,
        source_type=m.source.type,
        source_config=m.source.settings.model_dump(mode="json", by_alias=True),
        enabled=m.enabled,
        origin=str(m.origin),
        **stored_settings(m),
    )
    row.config_hash = f"{config_digest(row)}:{int(m.enabled)}"
    return row
