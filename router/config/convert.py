"""Validated YAML (or a stored row) -> frozen :class:`~router.models.MappingConfig`, and back.

The same :func:`build_mapping` checks a mapping from a YAML file and a row of
``event_source_mappings`` that an operator may have edited in SQL; only the way a key path
is turned into a location differs (file:line, or ``event_source_mappings[name=X].column``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from router.abc import SourceTraits
from router.config.destinations import build_destination
from router.config.plugins import load_plugin, validate_settings
from router.config.schema import (
    FUNCTION_KEYS,
    FUNCTION_NAME_PATTERN,
    REPORT_BATCH_ITEM_FAILURES,
    FunctionModel,
    Locate,
    MappingModel,
    used_key,
    validate_model,
)
from router.config.yaml_lines import KeyPath
from router.errors import ConfigError
from router.models import (
    DestinationSpec,
    FunctionConfig,
    MappingConfig,
    SourceKind,
    SourceSpec,
)
from router.secrets import SecretUrl

MAX_PATTERN_CHARS = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterSettings:
    """The optional top-level ``router:`` block, defaults applied."""

    store: SecretUrl | None = None
    """SQLAlchemy URL of the store; None lets the caller pick its default."""
    allow_plaintext_secrets: bool = False
    """Secrets written in place are accepted (and stored as written)."""
    deleted_mapping_retention: float = 604_800.0
    """Seconds a mapping the YAML deleted keeps its checkpoints for a mapping of the same
    name declared again; 0 drops them at once."""
    http_listen: str = "127.0.0.1:9090"
    log_format: str = "console"
    log_level: str = "INFO"
    max_filter_patterns: int = 5
    poll_interval: float = 2.0
    shutdown_timeout: float = 30.0


# -- functions ------------------------------------------------------------------------------


def build_function(
    name: Any, raw: Any, path: KeyPath, locate: Locate, errors: list[ConfigError]
) -> FunctionConfig | None:
    """One entry of ``functions:``: the common keys, the rest validated by the invoker."""
    start = len(errors)
    if not isinstance(name, str) or not re.match(FUNCTION_NAME_PATTERN, name):
        errors.append(
            ConfigError(
                f"a function name must match {FUNCTION_NAME_PATTERN} (as a Lambda function name)",
                locate(path, False),
            )
        )
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(ConfigError("must be a mapping with invoker: <type>", locate(path, False)))
        return None
    common = {k: v for k, v in raw.items() if k in FUNCTION_KEYS}
    model = validate_model(FunctionModel, common, path, locate, errors)
    if model is None:
        return None
    cls = load_plugin("invoker", model.invoker, (*path, "invoker"), locate, errors)
    if cls is None:
        return None
    rest = {k: v for k, v in raw.items() if k not in FUNCTION_KEYS}
    settings = validate_settings(cls, rest, path, locate, errors, also_known=tuple(FUNCTION_KEYS))
    if settings is None or len(errors) > start:
        return None
    return FunctionConfig(
        name=name, invoker=model.invoker, timeout=model.timeout, settings=settings, arn=model.arn
    )


# -- mappings -------------------------------------------------------------------------------


def source_traits(cls: Any, settings: Any) -> SourceTraits:
    """The source's defaults and limits; ``traits_for(settings)`` refines them when a type
    has variants (SQS FIFO: batch size <= 10, no batching window)."""
    refine = getattr(cls, "traits_for", None)
    if callable(refine):
        traits = refine(settings)
        if isinstance(traits, SourceTraits):
            return traits
    traits = getattr(cls, "traits", None)
    if isinstance(traits, SourceTraits):
        return traits
    return SourceTraits(
        kind=SourceKind.ASYNC, filter_view="", batch_size_default=1, batch_size_max=1
    )


class _Checker:
    """Range and support checks of one mapping against its source traits."""

    def __init__(
        self,
        raw: Mapping[str, Any],
        prefix: KeyPath,
        locate: Locate,
        errors: list[ConfigError],
        source_type: str,
        traits: SourceTraits,
        lenient: bool,
    ) -> None:
        self.raw = raw
        self.prefix = prefix
        self.locate = locate
        self.errors = errors
        self.source_type = source_type
        self.traits = traits
        self.lenient = lenient

    def path(self, field: str) -> KeyPath:
        return (*self.prefix, used_key(self.raw, MappingModel, field))

    def fail(
        self, field: str, message: str, path: KeyPath | None = None, *, enclosing: bool = False
    ) -> None:
        self.errors.append(ConfigError(message, self.locate(path or self.path(field), enclosing)))

    def supported(self, field: str, value: Any, neutral: Any, path: KeyPath | None = None) -> bool:
        """False (with an error) when ``field`` is set but the source type has no such thing.

        Stored rows carry every column; there a value equal to the default is not "set".
        """
        if value is None or field in self.traits.supports:
            return True
        if self.lenient and value == neutral:
            return True
        self.fail(field, f"not supported by source type {self.source_type!r}", path)
        return False

    def in_range(self, field: str, value: float, lo: float, hi: float) -> bool:
        if lo <= value <= hi:
            return True
        self.fail(
            field,
            f"must be between {_num(lo)} and {_num(hi)} for source type "
            f"{self.source_type!r}, got {_num(value)}",
        )
        return False


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value).strip())
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _patterns(
    model: MappingModel,
    raw: Mapping[str, Any],
    prefix: KeyPath,
    locate: Locate,
    errors: list[ConfigError],
    max_patterns: int,
    supports: frozenset[str],
    source_type: str,
) -> tuple[str, ...]:
    criteria = model.filter_criteria
    if criteria is None:
        return ()
    fc_key = used_key(raw, MappingModel, "filter_criteria")
    fc_path = (*prefix, fc_key)
    if "filter_criteria" not in supports:
        errors.append(
            ConfigError(f"not supported by source type {source_type!r}", locate(fc_path, False))
        )
        return ()
    try:
        from router.filters import PatternError, compile_patterns
    except ImportError:
        errors.append(
            ConfigError(
                "filter_criteria needs the filter engine, not available in this build",
                locate(fc_path, False),
            )
        )
        return ()
    raw_fc = raw.get(fc_key) or {}
    filters_key = "Filters" if "Filters" in raw_fc else "filters"
    if len(criteria.filters) > max_patterns:
        errors.append(
            ConfigError(
                f"at most {max_patterns} filter patterns per mapping (got "
                f"{len(criteria.filters)}); raise router.max_filter_patterns to allow more",
                locate((*fc_path, filters_key), False),
            )
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
            errors.append(
                ConfigError(
                    f"a filter pattern may have at most {MAX_PATTERN_CHARS} characters "
                    f"(this one has {len(text)})",
                    locate(path, False),
                )
            )
            continue
        try:
            compile_patterns([text])
        except PatternError as e:
            where = re.sub(r"^\[0\]\.?", "", e.path)
            message = f"invalid filter pattern: {e.reason}" + (f" (at {where})" if where else "")
            errors.append(ConfigError(message, locate(path, False)))
            continue
        out.append(text)
    return tuple(out)


def build_mapping(
    raw: Any,
    prefix: KeyPath,
    locate: Locate,
    errors: list[ConfigError],
    *,
    functions: Collection[str] | None,
    settings: RouterSettings,
    lenient: bool = False,
) -> MappingConfig | None:
    """Validate one mapping. Adds every problem found to ``errors``; None if there were any.

    ``functions`` None skips the check that the function exists. ``lenient`` accepts
    columns that equal their default even where the source type does not support them
    (a stored row has every column).
    """
    start = len(errors)
    if not isinstance(raw, dict):
        errors.append(ConfigError("a mapping must be a mapping of keys", locate(prefix, False)))
        return None
    model = validate_model(MappingModel, raw, prefix, locate, errors)
    source_raw = raw.get("source")
    source_type: str | None = None
    source_cls: Any = None
    source_settings: Any = None
    src_path = (*prefix, "source")
    if isinstance(source_raw, dict):
        if "type" not in source_raw:
            errors.append(ConfigError("required key is missing", locate((*src_path, "type"), True)))
        elif not isinstance(source_raw["type"], str):
            errors.append(ConfigError("must be a string", locate((*src_path, "type"), False)))
        else:
            source_type = source_raw["type"]
            source_cls = load_plugin("source", source_type, (*src_path, "type"), locate, errors)
            if source_cls is not None:
                rest = {k: v for k, v in source_raw.items() if k != "type"}
                source_settings = validate_settings(source_cls, rest, src_path, locate, errors)
    function_key = used_key(raw, MappingModel, "function")
    function_name = raw.get(function_key)
    if functions is not None and isinstance(function_name, str) and function_name not in functions:
        known = ", ".join(sorted(functions)) or "none declared"
        errors.append(
            ConfigError(
                f"unknown function {function_name!r}; functions declared under functions: {known}",
                locate((*prefix, function_key), False),
            )
        )
    if model is None or source_type is None or source_settings is None:
        return None

    traits = source_traits(source_cls, source_settings)
    check = _Checker(raw, prefix, locate, errors, source_type, traits, lenient)

    batch_size = traits.batch_size_default if model.batch_size is None else model.batch_size
    check.in_range("batch_size", batch_size, 1, traits.batch_size_max)

    window = model.maximum_batching_window
    if window is None:
        window = traits.window_default
    elif traits.window_max <= 0 and not (lenient and window == 0):
        check.fail("maximum_batching_window", f"not supported by source type {source_type!r}")
    else:
        check.in_range("maximum_batching_window", window, 0, traits.window_max)
    if source_type == "sqs" and traits.batch_size_max > 10 and batch_size > 10 and window < 1:
        check.fail(
            "batch_size",
            "a batch_size above 10 needs maximum_batching_window of at least 1 second "
            "(as AWS requires for SQS)",
        )

    position = model.starting_position
    if not traits.starting_positions:
        if position is not None:
            check.fail("starting_position", f"not supported by source type {source_type!r}")
    elif position is None:
        position = traits.starting_position_default
        if position is None:
            check.fail(
                "starting_position",
                f"required for source type {source_type!r}: one of "
                f"{', '.join(traits.starting_positions)}",
                enclosing=True,
            )
    elif position not in traits.starting_positions:
        check.fail(
            "starting_position",
            f"must be one of {', '.join(traits.starting_positions)} for source type "
            f"{source_type!r}",
        )
    timestamp: datetime | None = None
    if model.starting_position_timestamp is not None:
        try:
            timestamp = _timestamp(model.starting_position_timestamp)
        except (ValueError, OverflowError, OSError):
            check.fail(
                "starting_position_timestamp",
                "must be an ISO 8601 date-time (UTC if no offset) or epoch seconds",
            )
        if position != "AT_TIMESTAMP":
            check.fail(
                "starting_position_timestamp", "only allowed with starting_position AT_TIMESTAMP"
            )
    elif position == "AT_TIMESTAMP":
        check.fail("starting_position", "AT_TIMESTAMP needs starting_position_timestamp")

    retries = model.maximum_retry_attempts
    if (
        check.supported("maximum_retry_attempts", retries, traits.retry_default)
        and retries is not None
    ):
        check.in_range("maximum_retry_attempts", retries, traits.retry_min, traits.retry_max)
    age = model.maximum_record_age
    # -1 (no limit) only where it is the AWS default (streams); async sources cap the age.
    no_limit = age == -1 and traits.record_age_default == -1
    if (
        check.supported("maximum_record_age", age, traits.record_age_default)
        and age is not None
        and not no_limit
        and not traits.record_age_min <= age <= traits.record_age_max
    ):
        minus_one = "-1 or " if traits.record_age_default == -1 else ""
        check.fail(
            "maximum_record_age",
            f"must be {minus_one}between {_num(traits.record_age_min)} and "
            f"{_num(traits.record_age_max)} for source type {source_type!r}, got {age}",
        )

    bisect = model.bisect_batch_on_function_error
    check.supported("bisect_batch_on_function_error", bisect, False)
    response_types = model.function_response_types
    check.supported("function_response_types", response_types or None, None)
    factor = model.parallelization_factor
    if check.supported("parallelization_factor", factor, 1) and factor is not None:
        check.in_range("parallelization_factor", factor, 1, 10)

    concurrency = model.maximum_concurrency
    concurrency_path = (*prefix, "maximum_concurrency")
    if model.scaling_config is not None:
        sc_key = used_key(raw, MappingModel, "scaling_config")
        inner = raw[sc_key] if isinstance(raw.get(sc_key), dict) else {}
        mc_key = "MaximumConcurrency" if "MaximumConcurrency" in inner else "maximum_concurrency"
        if concurrency is not None:
            check.fail(
                "maximum_concurrency", f"given twice: here and as {sc_key}.{mc_key}; keep one"
            )
        concurrency = model.scaling_config.maximum_concurrency
        concurrency_path = (*prefix, sc_key, mc_key)
    if check.supported("maximum_concurrency", concurrency, None, concurrency_path) and (
        concurrency is not None and not 2 <= concurrency <= 1000
    ):
        check.fail(
            "maximum_concurrency",
            f"must be between 2 and 1000, got {concurrency}",
            concurrency_path,
        )

    patterns = _patterns(
        model,
        raw,
        prefix,
        locate,
        errors,
        settings.max_filter_patterns,
        traits.supports,
        source_type,
    )

    on_failure: DestinationSpec | None = None
    on_success: DestinationSpec | None = None
    dc = model.destination_config
    if dc is not None and (dc.on_failure is not None or dc.on_success is not None):
        dc_key = used_key(raw, MappingModel, "destination_config")
        raw_dc = raw[dc_key]
        if check.supported("destination_config", True, None, (*prefix, dc_key)):
            for attr, keys in (
                ("on_failure", ("OnFailure", "on_failure")),
                ("on_success", ("OnSuccess", "on_success")),
            ):
                block = getattr(dc, attr)
                if block is None:
                    continue
                key = next(k for k in keys if k in raw_dc)
                spec = build_destination(
                    block, (*prefix, dc_key, key), locate, errors, source_settings
                )
                if attr == "on_failure":
                    on_failure = spec
                else:
                    on_success = spec

    if len(errors) > start:
        return None
    return MappingConfig(
        name=model.name,
        function=model.function,
        source=SourceSpec(type=source_type, settings=source_settings),
        enabled=model.enabled,
        batch_size=batch_size,
        maximum_batching_window=float(window),
        starting_position=position,
        starting_position_timestamp=timestamp,
        filter_patterns=patterns,
        maximum_retry_attempts=traits.retry_default if retries is None else retries,
        maximum_record_age=float(traits.record_age_default if age is None else age),
        bisect_batch_on_function_error=bool(bisect),
        report_batch_item_failures=REPORT_BATCH_ITEM_FAILURES in (response_types or ()),
        parallelization_factor=1 if factor is None else factor,
        maximum_concurrency=concurrency,
        on_failure=on_failure,
        on_success=on_success,
    )
