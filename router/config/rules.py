"""The rule of each mapping setting: what YAML accepts for it, how it is checked against the
source type's traits, and how it is stored.

The settings themselves (their keys, AWS spellings and column types) are declared on
:class:`~router.models.MappingConfig`; every declared setting has exactly one rule here,
made with :func:`rule`. :data:`MappingModel`, the pydantic model of a ``mappings:`` entry,
is derived from both. Rules run in the order the settings are declared; a rule may read the
values of the settings before it (``check.values``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import create_model

from router.abc import SourceTraits
from router.config.destinations import build_destination, destination_to_raw
from router.config.schema import (
    REPORT_BATCH_ITEM_FAILURES,
    DestinationConfigModel,
    FilterCriteriaModel,
    Locate,
    MappingKeys,
    ScalingConfigModel,
    aka,
    used_key,
)
from router.config.yaml_lines import KeyPath
from router.errors import ConfigError
from router.models import MAPPING_FIELDS, DestinationSpec, MappingConfig

MAX_PATTERN_CHARS = 4096


class Check:
    """What a rule sees of the mapping it checks, and where it reports what is wrong.

    ``key`` is the setting being checked; ``values`` holds the :class:`MappingConfig`
    attributes of the settings checked before it. Stored rows carry every column
    (``lenient``): there a value equal to the default is not "set"."""

    def __init__(
        self,
        *,
        model: MappingKeys,
        raw: Mapping[str, Any],
        prefix: KeyPath,
        locate: Locate,
        errors: list[ConfigError],
        source_type: str,
        traits: SourceTraits,
        source_settings: Any,
        max_filter_patterns: int,
        lenient: bool,
    ) -> None:
        self.model = model
        self.raw = raw
        self.prefix = prefix
        self.locate = locate
        self.errors = errors
        self.source_type = source_type
        self.traits = traits
        self.source_settings = source_settings
        self.max_filter_patterns = max_filter_patterns
        self.lenient = lenient
        self.key = ""
        self.values: dict[str, Any] = {}

    def yaml(self, key: str) -> Any:
        """The validated YAML value of ``key`` (None when not given)."""
        return getattr(self.model, key)

    def written(self, key: str = "") -> str:
        """The spelling of ``key`` (default: the setting checked) the user wrote."""
        return used_key(self.raw, MappingModel, key or self.key)

    def path(self, key: str = "") -> KeyPath:
        return (*self.prefix, self.written(key))

    def fail(
        self, message: str, path: KeyPath | None = None, *, key: str = "", enclosing: bool = False
    ) -> None:
        self.errors.append(ConfigError(message, self.locate(path or self.path(key), enclosing)))

    def unsupported(self, path: KeyPath | None = None) -> None:
        self.fail(f"not supported by source type {self.source_type!r}", path)

    def supported(self, value: Any, neutral: Any, path: KeyPath | None = None) -> bool:
        """False (with an error) when the setting is given but the source type has no such
        thing (``traits.supports``)."""
        if value is None or self.key in self.traits.supports:
            return True
        if self.lenient and value == neutral:
            return True
        self.unsupported(path)
        return False

    def in_range(self, value: float, lo: float, hi: float, path: KeyPath | None = None) -> bool:
        if lo <= value <= hi:
            return True
        self.fail(
            f"must be between {_num(lo)} and {_num(hi)} for source type "
            f"{self.source_type!r}, got {_num(value)}",
            path,
        )
        return False


@dataclass(frozen=True, slots=True)
class YamlKey:
    """A further YAML key a rule reads (AWS nests some settings: ``ScalingConfig``)."""

    key: str
    yaml: Any
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    key: str
    yaml: Any
    """What YAML accepts for the key (a pydantic annotation; None is always accepted and
    means "the source type's default")."""
    check: Callable[[Any, Check], Any]
    """The YAML value (or None) -> the value of the setting's attribute (a tuple of them when
    the setting has several); problems are added through the :class:`Check`."""
    store: Callable[[MappingConfig], Any] | None
    """The attribute(s) -> the column value; None stores the attribute as it is."""
    also: tuple[YamlKey, ...] = ()


RULES: dict[str, Rule] = {}
"""The rule of each setting, by key."""


def rule(
    key: str,
    yaml: Any,
    *,
    store: Callable[[MappingConfig], Any] | None = None,
    also: tuple[YamlKey, ...] = (),
) -> Callable[[Callable[[Any, Check], Any]], Callable[[Any, Check], Any]]:
    """Register the decorated function as the check of the setting ``key``."""

    def register(check: Callable[[Any, Check], Any]) -> Callable[[Any, Check], Any]:
        if key in RULES:
            raise TypeError(f"setting {key!r} has a rule already")
        RULES[key] = Rule(key=key, yaml=yaml, check=check, store=store, also=also)
        return check

    return register


def check_settings(check: Check) -> dict[str, Any]:
    """Every setting's attribute(s) of the mapping ``check`` looks at, defaults applied."""
    values = check.values
    for setting in MAPPING_FIELDS:
        check.key = setting.key
        value = RULES[setting.key].check(check.yaml(setting.key), check)
        if len(setting.attributes) == 1:
            values[setting.attributes[0]] = value
        else:
            values.update(zip(setting.attributes, value, strict=True))
    check.key = ""
    return values


def stored_settings(mapping: MappingConfig) -> dict[str, Any]:
    """The setting columns of the row that stores ``mapping``."""
    out: dict[str, Any] = {}
    for setting in MAPPING_FIELDS:
        store = RULES[setting.key].store
        out[setting.key] = (
            getattr(mapping, setting.attributes[0]) if store is None else store(mapping)
        )
    return out


def yaml_is_integer(key: str) -> bool:
    """True when YAML takes an integer for ``key`` (its column may give back ``5.0``)."""
    return RULES[key].yaml is int


# -- the rules, in the order the settings are declared ------------------------------------


@rule("batch_size", int)
def _batch_size(value: int | None, check: Check) -> int:
    traits = check.traits
    size = traits.batch_size_default if value is None else value
    check.in_range(size, 1, traits.batch_size_max)
    return size


@rule("maximum_batching_window", float)
def _maximum_batching_window(value: float | None, check: Check) -> float:
    traits = check.traits
    if value is None:
        return float(traits.window_default)
    if traits.window_max <= 0 and not (check.lenient and value == 0):
        check.unsupported()
    else:
        check.in_range(value, 0, traits.window_max)
    return float(value)


@rule("starting_position", str)
def _starting_position(value: str | None, check: Check) -> str | None:
    positions = check.traits.starting_positions
    if not positions:
        if value is not None:
            check.unsupported()
        return value
    if value is None:
        value = check.traits.starting_position_default
        if value is None:
            check.fail(
                f"required for source type {check.source_type!r}: one of {', '.join(positions)}",
                enclosing=True,
            )
    elif value not in positions:
        check.fail(f"must be one of {', '.join(positions)} for source type {check.source_type!r}")
    return value


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value).strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@rule("starting_position_timestamp", datetime | float | str)
def _starting_position_timestamp(value: Any, check: Check) -> datetime | None:
    position = check.values["starting_position"]
    if value is None:
        if position == "AT_TIMESTAMP":
            check.fail("AT_TIMESTAMP needs starting_position_timestamp", key="starting_position")
        return None
    timestamp: datetime | None = None
    try:
        timestamp = _timestamp(value)
    except (ValueError, OverflowError, OSError):
        check.fail("must be an ISO 8601 date-time (UTC if no offset) or epoch seconds")
    if position != "AT_TIMESTAMP":
        check.fail("only allowed with starting_position AT_TIMESTAMP")
    return timestamp


def _stored_patterns(mapping: MappingConfig) -> Any:
    patterns = mapping.filter_patterns
    return {"Filters": [{"Pattern": p} for p in patterns]} if patterns else None


@rule("filter_criteria", FilterCriteriaModel, store=_stored_patterns)
def _filter_criteria(criteria: FilterCriteriaModel | None, check: Check) -> tuple[str, ...]:
    if criteria is None:
        return ()
    fc_path = check.path()
    if "filter_criteria" not in check.traits.supports:
        check.unsupported(fc_path)
        return ()
    try:
        from router.filters import PatternError, compile_patterns
    except ImportError:
        check.fail("filter_criteria needs the filter engine, not available in this build")
        return ()
    raw_fc = check.raw.get(check.written()) or {}
    filters_key = "Filters" if "Filters" in raw_fc else "filters"
    most = check.max_filter_patterns
    if len(criteria.filters) > most:
        check.fail(
            f"at most {most} filter patterns per mapping (got {len(criteria.filters)}); "
            "raise router.max_filter_patterns to allow more",
            (*fc_path, filters_key),
        )
    out: list[str] = []
    for j, item in enumerate(criteria.filters):
        raw_item = raw_fc[filters_key][j] if isinstance(raw_fc.get(filters_key), list) else {}
        pattern_key = (
            "Pattern" if isinstance(raw_item, dict) and "Pattern" in raw_item else "pattern"
        )
        path = (*fc_path, filters_key, j, pattern_key)
        if isinstance(item.pattern, str):
            text = item.pattern.strip()
        else:
            text = json.dumps(item.pattern, separators=(",", ":"), ensure_ascii=False)
        if len(text) > MAX_PATTERN_CHARS:
            check.fail(
                f"a filter pattern may have at most {MAX_PATTERN_CHARS} characters "
                f"(this one has {len(text)})",
                path,
            )
            continue
        try:
            compile_patterns([text])
        except PatternError as e:
            where = re.sub(r"^\[0\]\.?", "", e.path)
            check.fail(
                f"invalid filter pattern: {e.reason}" + (f" (at {where})" if where else ""), path
            )
            continue
        out.append(text)
    return tuple(out)


@rule("maximum_retry_attempts", int)
def _maximum_retry_attempts(value: int | None, check: Check) -> int:
    traits = check.traits
    if check.supported(value, traits.retry_default) and value is not None:
        check.in_range(value, traits.retry_min, traits.retry_max)
    return traits.retry_default if value is None else value


@rule("maximum_record_age", int)
def _maximum_record_age(value: int | None, check: Check) -> float:
    traits = check.traits
    # -1 (no limit) only where it is the AWS default (streams); async sources cap the age.
    no_limit = value == -1 and traits.record_age_default == -1
    if (
        check.supported(value, traits.record_age_default)
        and value is not None
        and not no_limit
        and not traits.record_age_min <= value <= traits.record_age_max
    ):
        minus_one = "-1 or " if traits.record_age_default == -1 else ""
        check.fail(
            f"must be {minus_one}between {_num(traits.record_age_min)} and "
            f"{_num(traits.record_age_max)} for source type {check.source_type!r}, got {value}"
        )
    return float(traits.record_age_default if value is None else value)


@rule("bisect_batch_on_function_error", bool)
def _bisect_batch_on_function_error(value: bool | None, check: Check) -> bool:
    check.supported(value, False)
    return bool(value)


def _stored_response_types(mapping: MappingConfig) -> Any:
    return [REPORT_BATCH_ITEM_FAILURES] if mapping.report_batch_item_failures else None


@rule(
    "function_response_types",
    list[Literal["ReportBatchItemFailures"]],
    store=_stored_response_types,
)
def _function_response_types(value: list[str] | None, check: Check) -> bool:
    check.supported(value or None, None)
    return REPORT_BATCH_ITEM_FAILURES in (value or ())


@rule("parallelization_factor", int)
def _parallelization_factor(value: int | None, check: Check) -> int:
    if check.supported(value, 1) and value is not None:
        check.in_range(value, 1, 10)
    return 1 if value is None else value


@rule("tumbling_window", int)
def _tumbling_window(value: int | None, check: Check) -> int:
    if check.supported(value, 0) and value is not None:
        check.in_range(value, 0, 900)
    return 0 if value is None else value


@rule(
    "maximum_concurrency",
    int,
    also=(YamlKey("scaling_config", ScalingConfigModel, ("ScalingConfig",)),),
)
def _maximum_concurrency(value: int | None, check: Check) -> int | None:
    path = check.path()
    scaling: ScalingConfigModel | None = check.yaml("scaling_config")
    if scaling is not None:
        sc_key = check.written("scaling_config")
        inner = check.raw[sc_key] if isinstance(check.raw.get(sc_key), dict) else {}
        mc_key = "MaximumConcurrency" if "MaximumConcurrency" in inner else "maximum_concurrency"
        if value is not None:
            check.fail(f"given twice: here and as {sc_key}.{mc_key}; keep one")
        value = scaling.maximum_concurrency
        path = (*check.prefix, sc_key, mc_key)
    if check.supported(value, None, path) and value is not None and not 2 <= value <= 1000:
        check.fail(f"must be between 2 and 1000, got {value}", path)
    return value


def _stored_destinations(mapping: MappingConfig) -> Any:
    if mapping.on_failure is None and mapping.on_success is None:
        return None
    destination: dict[str, Any] = {}
    if mapping.on_failure is not None:
        destination["on_failure"] = destination_to_raw(mapping.on_failure)
    if mapping.on_success is not None:
        destination["on_success"] = destination_to_raw(mapping.on_success)
    return destination


@rule("destination_config", DestinationConfigModel, store=_stored_destinations)
def _destination_config(
    dc: DestinationConfigModel | None, check: Check
) -> tuple[DestinationSpec | None, DestinationSpec | None]:
    specs: dict[str, DestinationSpec | None] = {"on_failure": None, "on_success": None}
    if dc is None or (dc.on_failure is None and dc.on_success is None):
        return None, None
    dc_path = check.path()
    if not check.supported(True, None, dc_path):
        return None, None
    raw_dc = check.raw[check.written()]
    for attr, keys in (
        ("on_failure", ("OnFailure", "on_failure")),
        ("on_success", ("OnSuccess", "on_success")),
    ):
        block = getattr(dc, attr)
        if block is None:
            continue
        key = next(k for k in keys if k in raw_dc)
        specs[attr] = build_destination(
            block, (*dc_path, key), check.locate, check.errors, check.source_settings
        )
    return specs["on_failure"], specs["on_success"]


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _mapping_model() -> type[MappingKeys]:
    fields: dict[str, Any] = {}
    for setting in MAPPING_FIELDS:
        found = RULES.get(setting.key)
        if found is None:
            raise TypeError(f"setting {setting.key!r} has no rule in {__name__}")
        fields[setting.key] = (
            found.yaml | None,
            aka(setting.key, *setting.aliases, default=None, description=setting.doc),
        )
        for extra in found.also:
            fields[extra.key] = (extra.yaml | None, aka(extra.key, *extra.aliases, default=None))
    unknown = set(RULES) - {setting.key for setting in MAPPING_FIELDS}
    if unknown:
        raise TypeError(f"rules for undeclared settings: {', '.join(sorted(unknown))}")
    model: type[MappingKeys] = create_model(
        "MappingModel",
        __base__=MappingKeys,
        __doc__='One entry of ``mappings:``. ``None`` means "the source type\'s default".',
        **fields,
    )
    return model


MappingModel = _mapping_model()
"""The pydantic model of one entry of ``mappings:``: its own keys (:class:`MappingKeys`) and
one key per setting (with the further keys their rules read)."""
