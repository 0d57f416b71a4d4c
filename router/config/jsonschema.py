"""JSON Schema of the configuration file, for editors (``router schema``).

Plug-in blocks are discriminated unions on ``type`` (``invoker`` for functions), built from
each registered plug-in's ``Settings`` model; a plug-in whose module cannot be imported in
this installation is described as an open object.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from router import registry
from router.config.plugins import settings_class
from router.config.rules import MappingModel
from router.config.schema import (
    DestinationConfigModel,
    FilterCriteriaModel,
    FilterModel,
    FunctionModel,
    RouterSettingsModel,
    ScalingConfigModel,
    field_aliases,
)

_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


class _Defs:
    """Collects ``$defs`` of several pydantic schemas under one root."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def model(self, model: type[BaseModel], *, aliases: bool = True) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            self.defs.setdefault(name, sub)
        if aliases:
            _add_aliases(schema, model)
        return schema


def _add_aliases(schema: dict[str, Any], model: type[BaseModel]) -> None:
    props = schema.get("properties", {})
    for name, spellings in field_aliases(model).items():
        if name in props:
            for alias in spellings[1:]:
                props.setdefault(alias, props[name])


def _plugin(defs: _Defs, kind: str, type_name: str) -> dict[str, Any] | None:
    try:
        cls = registry.load(kind, type_name)
    except Exception:  # noqa: BLE001 - a missing plug-in leaves its branch open
        return None
    return defs.model(settings_class(cls), aliases=False)


def _union(
    defs: _Defs, kind: str, key: str, common: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One branch per installed plug-in of ``kind``, told apart by ``key``."""
    table = registry.plugins(kind)
    branches: list[dict[str, Any]] = []
    for type_name in sorted(table):
        settings = _plugin(defs, kind, type_name)
        props: dict[str, Any] = {key: {"const": type_name}}
        props.update(copy.deepcopy(common or {}))
        branch: dict[str, Any] = {"type": "object", "required": [key]}
        if settings is None:
            branch["properties"] = props
            branch["description"] = f"{type_name} (its settings are not known to this build)"
        else:
            props.update(settings.get("properties", {}))
            branch["properties"] = props
            branch["required"] = [key, *settings.get("required", [])]
            branch["additionalProperties"] = False
            if settings.get("description"):
                branch["description"] = settings["description"]
        branches.append(branch)
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"enum": sorted(table)}},
        "oneOf": branches,
    }


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a configuration file."""
    defs = _Defs()
    function_common = defs.model(FunctionModel)["properties"]
    function_common.pop("invoker", None)
    functions = _union(defs, "invoker", "invoker", function_common)
    source = _union(defs, "source", "type")
    typed_destination = _union(defs, "destination", "type")
    destination = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "destination": {"type": "string"},
                    "Destination": {"type": "string"},
                },
                "additionalProperties": False,
                "description": "table, arn:aws:sqs|sns|s3:..., http(s)://..., file:///PATH, "
                "kafka://[HOST:PORT/]TOPIC",
            },
            typed_destination,
        ]
    }
    mapping = defs.model(MappingModel)
    props = mapping["properties"]
    for key in field_aliases(MappingModel)["source"]:
        props[key] = source
    for sub in (FilterCriteriaModel, FilterModel, ScalingConfigModel, DestinationConfigModel):
        if sub.__name__ in defs.defs:
            _add_aliases(defs.defs[sub.__name__], sub)
    dc = defs.defs.get(DestinationConfigModel.__name__)
    if dc is not None:
        for key in ("on_failure", "OnFailure", "on_success", "OnSuccess"):
            dc["properties"][key] = {"anyOf": [destination, {"type": "null"}]}
    router = defs.model(RouterSettingsModel)
    return {
        "$schema": _SCHEMA_URI,
        "title": "event router configuration",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "router": router,
            "functions": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "additionalProperties": functions,
            },
            "mappings": {"type": "array", "items": mapping},
        },
        "$defs": defs.defs,
    }
