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
from router.config.destinations import SAM_DESTINATION_TYPES
from router.config.plugins import settings_class
from router.config.rules import MappingModel
from router.config.sam import NAMING_PROPERTIES
from router.config.schema import (
    DestinationConfigModel,
    FunctionModel,
    RouterSettingsModel,
    annotation_types,
    field_aliases,
)

_SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"


class _Defs:
    """Collects ``$defs`` of several pydantic schemas under one root."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}

    def model(self, model: type[BaseModel]) -> dict[str, Any]:
        """``model``'s schema, its nested models in ``$defs``, every spelling the validator
        accepts (each field's aliases) listed in both."""
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        nested = {m.__name__: m for m in _nested_models(model)}
        for name, sub in schema.pop("$defs", {}).items():
            if name in nested:
                _add_aliases(sub, nested[name])
            self.defs.setdefault(name, sub)
        _add_aliases(schema, model)
        return schema


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The models the fields of ``model`` hold, at any depth."""
    out: list[type[BaseModel]] = []
    todo = [model]
    while todo:
        current = todo.pop()
        for info in current.model_fields.values():
            for t in annotation_types(info.annotation):
                if isinstance(t, type) and issubclass(t, BaseModel) and t not in out:
                    out.append(t)
                    todo.append(t)
    return out


def _add_aliases(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Each field's aliases as properties of their own; a required field may be given in
    any of its spellings (exactly one: two spellings of one key are an error)."""
    props = schema.get("properties", {})
    required = schema.get("required", [])
    for name, spellings in field_aliases(model).items():
        if name not in props or len(spellings) < 2:
            continue
        for alias in spellings[1:]:
            props.setdefault(alias, props[name])
        pairs = [{"required": [a, b]} for a in spellings for b in spellings if a < b]
        once = {"not": {"anyOf": pairs}}
        if name in required:
            required.remove(name)
            schema.setdefault("allOf", []).append({"oneOf": [{"required": [s]} for s in spellings]})
        else:
            schema.setdefault("allOf", []).append(once)
    if "required" in schema and not required:
        del schema["required"]


def _plugin(defs: _Defs, kind: str, type_name: str) -> dict[str, Any] | None:
    try:
        cls = registry.load(kind, type_name)
    except Exception:  # noqa: BLE001 - a missing plug-in leaves its branch open
        return None
    return defs.model(settings_class(cls))


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


def _ported(mapping: dict[str, Any]) -> dict[str, Any]:
    """A mapping written with SAM / CloudFormation properties instead of ``source:``
    (docs/configuration.md, "Porting from SAM"): the mapping's own keys as in ``mapping``,
    one property that names the source, and the source's settings beside (checked by
    ``router validate``, which knows which source they are for)."""
    ported = copy.deepcopy(mapping)
    ported["properties"].pop("source", None)
    ported["required"] = [k for k in ported.get("required", []) if k != "source"]
    ported["additionalProperties"] = True
    ported.setdefault("allOf", []).extend(
        [
            {"not": {"required": ["source"]}},
            {"anyOf": [{"required": [key]} for key in NAMING_PROPERTIES]},
        ]
    )
    ported["description"] = (
        "SAM / CloudFormation properties pasted without source: (the source's settings "
        "beside them are checked by router validate)"
    )
    return ported


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
                    "Type": {"enum": sorted(SAM_DESTINATION_TYPES)},
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
            "mappings": {"type": "array", "items": {"anyOf": [mapping, _ported(mapping)]}},
        },
        "$defs": defs.defs,
    }
