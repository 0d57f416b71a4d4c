"""A rule target's input transformation, as EventBridge applies it (pure: no I/O).

One of (each validated when the configuration is read):

- ``Input``: constant JSON text delivered instead of the event;
- ``InputPath``: a JSONPath (``$.detail``) selecting the part of the event delivered;
- ``InputTransformer``: ``InputPathsMap`` (up to 100 variables, each a JSONPath into the
  event) and ``InputTemplate``, in which ``<name>`` is replaced by a variable's value, or by
  one of the predefined ``<aws.events.rule-arn>``, ``<aws.events.rule-name>``,
  ``<aws.events.event.ingestion-time>``, ``<aws.events.event>`` (the event without
  ``detail``) and ``<aws.events.event.json>`` (the whole event).

The quoting rules of ``InputTemplate``:

- a placeholder outside a JSON string is replaced by the value as JSON (a string with its
  quotes, an object as an object): ``{"id": <id>}`` gives ``{"id": "o-1"}``;
- inside a string it is replaced by the value's text: ``"order <id> placed"`` gives
  ``"order o-1 placed"``; a value that is no string is written as its JSON text;
- a variable whose path is not in the event gives ``null`` outside a string and nothing
  inside one;
- ``<name>`` that names no variable stays as it is.

JSONPath as EventBridge supports it: ``$``, dot notation with letters, digits, ``_``, ``-``
(``$.detail.order-id``), ``['name']``, array indices ``[0]`` and wildcards ``[*]`` /
``.*`` (a path with a wildcard gives the list of what it matches).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

MAX_VARIABLES = 100
MAX_TEMPLATE = 8192
MAX_INPUT = 8192
MAX_INPUT_PATH = 256
PREDEFINED = frozenset(
    {
        "aws.events.rule-arn",
        "aws.events.rule-name",
        "aws.events.event.ingestion-time",
        "aws.events.event",
        "aws.events.event.json",
    }
)
_VARIABLE = re.compile(r"^[A-Za-z0-9_\-]+$")
_PLACEHOLDER = re.compile(r"<([A-Za-z0-9_.\-]+)>")
_SEGMENT = re.compile(
    r"""\.(?P<name>[A-Za-z0-9_\-/]+)|\.(?P<dotstar>\*)|\[(?P<index>\d+)\]|\[(?P<star>\*)\]"""
    r"""|\[(?P<q>['"])(?P<quoted>[^'"]+)(?P=q)\]"""
)
_MISSING: Any = object()
_WILD: Any = object()


class TransformError(ValueError):
    """An input setting EventBridge would refuse; says what and how to fix it."""


@dataclass(frozen=True, slots=True)
class JsonPath:
    """A compiled JSONPath of EventBridge's subset."""

    text: str
    steps: tuple[Any, ...]
    """Names (str), indices (int) and wildcards."""

    @classmethod
    def parse(cls, text: str) -> JsonPath:
        if not text.startswith("$"):
            raise TransformError(f"a JSON path starts with '$', got {text!r}")
        steps: list[Any] = []
        at = 1
        while at < len(text):
            found = _SEGMENT.match(text, at)
            if found is None:
                raise TransformError(
                    f"JSON path {text!r}: cannot read {text[at:]!r}; use $.name, $.a.b, "
                    "$['name'], [0] or [*]"
                )
            if found["name"] is not None:
                steps.append(found["name"])
            elif found["quoted"] is not None:
                steps.append(found["quoted"])
            elif found["index"] is not None:
                steps.append(int(found["index"]))
            else:
                steps.append(_WILD)
            at = found.end()
        return cls(text, tuple(steps))

    @property
    def has_wildcard(self) -> bool:
        return any(s is _WILD for s in self.steps)

    def find(self, document: Any) -> Any:
        """The value at the path, a list of them with a wildcard, or ``MISSING``."""
        values = [document]
        for step in self.steps:
            after: list[Any] = []
            for value in values:
                if step is _WILD:
                    if isinstance(value, dict):
                        after.extend(value.values())
                    elif isinstance(value, list):
                        after.extend(value)
                elif isinstance(step, int):
                    if isinstance(value, list) and step < len(value):
                        after.append(value[step])
                elif isinstance(value, dict) and step in value:
                    after.append(value[step])
            values = after
        if self.has_wildcard:
            return values
        return values[0] if values else _MISSING


def is_missing(value: Any) -> bool:
    return value is _MISSING


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleInfo:
    """What the predefined variables say about the rule."""

    name: str
    arn: str


@dataclass(frozen=True, slots=True)
class InputTransformer:
    paths: Mapping[str, JsonPath]
    template: str

    @classmethod
    def parse(cls, paths_map: Mapping[str, str], template: str) -> InputTransformer:
        if len(paths_map) > MAX_VARIABLES:
            raise TransformError(
                f"InputPathsMap has {len(paths_map)} variables; at most {MAX_VARIABLES}"
            )
        paths: dict[str, JsonPath] = {}
        for name, path in paths_map.items():
            if not _VARIABLE.match(name):
                raise TransformError(
                    f"InputPathsMap: variable {name!r}: use letters, digits, '_' and '-'"
                )
            paths[name] = JsonPath.parse(path)
        if not template:
            raise TransformError("InputTemplate is required with InputPathsMap")
        if len(template) > MAX_TEMPLATE:
            raise TransformError(f"InputTemplate has at most {MAX_TEMPLATE} characters")
        transformer = cls(paths, template)
        sample = transformer.render_text({}, RuleInfo(name="rule", arn="arn"), "")
        try:
            orjson.loads(sample)
        except orjson.JSONDecodeError as e:
            raise TransformError(
                "InputTemplate does not give JSON (a function takes JSON only): write text "
                f'in quotes ("order <id> placed") or a JSON object; {e}'
            ) from None
        return transformer

    def _value(self, name: str, event: Mapping[str, Any], rule: RuleInfo, ingested: str) -> Any:
        if name in self.paths:
            return self.paths[name].find(event)
        if name == "aws.events.rule-arn":
            return rule.arn
        if name == "aws.events.rule-name":
            return rule.name
        if name == "aws.events.event.ingestion-time":
            return ingested
        if name == "aws.events.event":
            return {k: v for k, v in event.items() if k != "detail"}
        if name == "aws.events.event.json":
            return event
        raise KeyError(name)

    def render_text(self, event: Mapping[str, Any], rule: RuleInfo, ingested: str) -> str:
        """The template with its placeholders replaced (see the module's docstring)."""
        out: list[str] = []
        template = self.template
        in_string = False
        at = 0
        while at < len(template):
            char = template[at]
            if char == "\\" and in_string:
                out.append(template[at : at + 2])
                at += 2
                continue
            if char == '"':
                in_string = not in_string
            elif char == "<":
                found = _PLACEHOLDER.match(template, at)
                if found is not None and (found[1] in self.paths or found[1] in PREDEFINED):
                    value = self._value(found[1], event, rule, ingested)
                    out.append(_inside(value) if in_string else _outside(value))
                    at = found.end()
                    continue
            out.append(char)
            at += 1
        return "".join(out)

    def apply(self, event: Mapping[str, Any], rule: RuleInfo, ingested: str) -> Any:
        return orjson.loads(self.render_text(event, rule, ingested))


def _outside(value: Any) -> str:
    return "null" if value is _MISSING else orjson.dumps(value).decode()


def _inside(value: Any) -> str:
    if value is _MISSING:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    # Escaped so that the string stays valid JSON (EventBridge inserts the raw text, which a
    # quote in the value would turn into JSON no function can be invoked with).
    return orjson.dumps(text).decode()[1:-1]


@dataclass(frozen=True, slots=True)
class TargetInput:
    """What a target receives for an event: the event itself, ``Input``, the part of it at
    ``InputPath``, or what ``InputTransformer`` makes of it."""

    constant: Any = _MISSING
    path: JsonPath | None = None
    transformer: InputTransformer | None = None

    @classmethod
    def parse(
        cls,
        *,
        input: str | None = None,
        input_path: str | None = None,
        paths_map: Mapping[str, str] | None = None,
        template: str | None = None,
    ) -> TargetInput:
        given = [
            name
            for name, value in (
                ("Input", input),
                ("InputPath", input_path),
                ("InputTransformer", template if paths_map is None else paths_map),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise TransformError(f"{' and '.join(given)} exclude each other: give one")
        if input is not None:
            if len(input) > MAX_INPUT:
                raise TransformError(f"Input has at most {MAX_INPUT} characters")
            try:
                return cls(constant=orjson.loads(input))
            except orjson.JSONDecodeError as e:
                raise TransformError(f"Input is not valid JSON: {e}") from None
        if input_path is not None:
            if len(input_path) > MAX_INPUT_PATH:
                raise TransformError(f"InputPath has at most {MAX_INPUT_PATH} characters")
            return cls(path=JsonPath.parse(input_path))
        if template is not None or paths_map is not None:
            return cls(transformer=InputTransformer.parse(paths_map or {}, template or ""))
        return cls()

    @property
    def is_identity(self) -> bool:
        return self.constant is _MISSING and self.path is None and self.transformer is None

    def apply(self, event: Mapping[str, Any], rule: RuleInfo, ingested: str) -> Any:
        if self.constant is not _MISSING:
            return self.constant
        if self.path is not None:
            found = self.path.find(event)
            return None if found is _MISSING else found
        if self.transformer is not None:
            return self.transformer.apply(event, rule, ingested)
        return event


__all__ = [
    "PREDEFINED",
    "InputTransformer",
    "JsonPath",
    "RuleInfo",
    "TargetInput",
    "TransformError",
    "is_missing",
]
