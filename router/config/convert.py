"""Validated YAML (or a stored row) -> frozen :class:`~router.models.FunctionConfig` and
:class:`~router.models.MappingConfig`.

The same :func:`build_mapping` checks a mapping from a YAML file and a row of
``event_source_mappings`` that an operator may have edited in SQL; only the way a key path
is turned into a location differs (file:line, or ``event_source_mappings[name=X].column``).
Each setting is checked by its rule (:mod:`router.config.rules`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from router.abc import SourceTraits
from router.config.destinations import build_destination
from router.config.plugins import load_plugin, validate_settings
from router.config.rules import Check, MappingModel, check_settings
from router.config.sam import (
    NAMING_PROPERTIES,
    NOT_SUPPORTED,
    PortError,
    derived_source_type,
    mapping_settings,
)
from router.config.schema import (
    FUNCTION_KEYS,
    FUNCTION_NAME_PATTERN,
    DestinationConfigModel,
    EventInvokeConfigModel,
    FunctionModel,
    IngressModel,
    Locate,
    field_aliases,
    used_key,
    validate_model,
)
from router.config.yaml_lines import KeyPath
from router.errors import ConfigError
from router.models import (
    ACCOUNT_ID,
    ASYNC_EVENT_AGE_DEFAULT,
    ASYNC_EVENT_AGE_MAX,
    ASYNC_EVENT_AGE_MIN,
    ASYNC_RETRIES_DEFAULT,
    ASYNC_RETRIES_MAX,
    DestinationSpec,
    EventInvokeConfig,
    FunctionConfig,
    MappingConfig,
    SourceKind,
    SourceSpec,
    current_account,
)
from router.secrets import Secret, SecretUrl


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressCredential:
    """An access key whose SigV4 signatures the ingress listener accepts."""

    access_key_id: str
    secret_access_key: Secret


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressSettings:
    """``router.ingress``, defaults applied (see docs/ingress.md)."""

    listen: str = "127.0.0.1:9000"
    """``HOST:PORT``; port 0 picks a free port."""
    credentials: tuple[IngressCredential, ...] = ()
    """When set, every request of a signed front-end must carry a valid SigV4 signature
    made with one of these keys."""
    lease_timeout: float = 30.0
    """Seconds a replica's claim on a queued event lasts unless renewed."""
    poll_interval: float = 1.0
    """Seconds between looks for queued events this replica was not told about."""
    retry_delay_scale: float = 1.0
    """Factor of Lambda's asynchronous retry delays and maximum event age (tests: 0.01)."""

    @classmethod
    def from_model(cls, model: IngressModel) -> IngressSettings:
        keys = model.credentials
        return cls(
            listen=model.listen,
            credentials=tuple(
                IngressCredential(
                    access_key_id=key.access_key_id, secret_access_key=key.secret_access_key
                )
                for key in keys
            ),
            lease_timeout=model.queue.lease_timeout,
            poll_interval=model.queue.poll_interval,
            retry_delay_scale=model.retry_delay_scale,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSettings:
    """``router.console`` (see docs/console.md)."""

    allow_changes: bool = False
    """The console shows and accepts enable / disable and replay; otherwise it only shows."""


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
    account_id: str = ACCOUNT_ID
    """The account of the ARNs the router makes up (functions' and events')."""
    log_format: str = "console"
    log_level: str = "INFO"
    max_filter_patterns: int = 5
    poll_interval: float = 2.0
    shutdown_timeout: float = 30.0
    readiness_failure_grace: float = 300.0
    """Seconds a running mapping may fail (PROBLEM) before /readyz answers 503."""
    console: ConsoleSettings = ConsoleSettings()
    ingress: IngressSettings | None = None
    """The ingress listener and the asynchronous-invocation queue; None: not run."""


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
    event_invoke = EventInvokeConfig()
    if model.event_invoke_config is not None:
        key = used_key(raw, FunctionModel, "event_invoke_config")
        event_invoke = _event_invoke(
            model.event_invoke_config, raw[key], (*path, key), locate, errors
        )
    if settings is None or len(errors) > start:
        return None
    return FunctionConfig(
        name=name,
        invoker=model.invoker,
        timeout=model.timeout,
        settings=settings,
        arn=model.arn,
        event_invoke=event_invoke,
        account_id=current_account(),
    )


def _event_invoke(
    model: EventInvokeConfigModel,
    raw: dict[str, Any],
    path: KeyPath,
    locate: Locate,
    errors: list[ConfigError],
) -> EventInvokeConfig:
    """A function's ``event_invoke_config``: Lambda's ranges, and its destinations."""
    retries, age = model.maximum_retry_attempts, model.maximum_event_age
    for value, field, low, high, unit in (
        (retries, "maximum_retry_attempts", 0, ASYNC_RETRIES_MAX, ""),
        (age, "maximum_event_age", ASYNC_EVENT_AGE_MIN, ASYNC_EVENT_AGE_MAX, " seconds"),
    ):
        if value is not None and not low <= value <= high:
            key = used_key(raw, EventInvokeConfigModel, field)
            errors.append(
                ConfigError(
                    f"must be between {low} and {high}{unit} (Lambda's limits for "
                    f"asynchronous invocation), got {value}",
                    locate((*path, key), False),
                )
            )
    specs: dict[str, DestinationSpec | None] = {"on_failure": None, "on_success": None}
    if model.destination_config is not None:
        dc_key = used_key(raw, EventInvokeConfigModel, "destination_config")
        raw_dc = raw[dc_key]
        for attr in specs:
            block = getattr(model.destination_config, attr)
            if block is not None:
                key = used_key(raw_dc, DestinationConfigModel, attr)
                specs[attr] = build_destination(block, (*path, dc_key, key), locate, errors)
    return EventInvokeConfig(
        maximum_retry_attempts=ASYNC_RETRIES_DEFAULT if retries is None else retries,
        maximum_event_age=ASYNC_EVENT_AGE_DEFAULT if age is None else age,
        on_failure=specs["on_failure"],
        on_success=specs["on_success"],
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
    return SourceTraits(kind=SourceKind.ASYNC, batch_size_default=1, batch_size_max=1)


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
    refused = [k for k in raw if k in NOT_SUPPORTED]
    errors.extend(ConfigError(NOT_SUPPORTED[k], locate((*prefix, k), False)) for k in refused)
    if refused:
        raw = {k: v for k, v in raw.items() if k not in NOT_SUPPORTED}
    source_raw = raw.get("source")
    source_type: str | None = None
    source_cls: Any = None
    source_settings: Any = None
    src_path = (*prefix, "source")
    if source_raw is None and not lenient:
        before = len(errors)
        ported = _ported_source(raw, prefix, locate, errors)
        if len(errors) > before:
            return None
        if ported is not None:
            raw, source_type, source_raw = ported
            source_cls = load_plugin(
                "source", source_type, (*prefix, next(iter(source_raw))), locate, errors
            )
            if source_cls is not None:
                source_settings = validate_settings(
                    source_cls,
                    source_raw,
                    prefix,
                    locate,
                    errors,
                    also_known=_MAPPING_SPELLINGS,
                )
    model = validate_model(MappingModel, raw, prefix, locate, errors)
    if isinstance(source_raw, dict) and source_type is None:
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
    check = Check(
        model=model,
        raw=raw,
        prefix=prefix,
        locate=locate,
        errors=errors,
        source_type=source_type,
        traits=traits,
        source_settings=source_settings,
        max_filter_patterns=settings.max_filter_patterns,
        lenient=lenient,
    )
    values = check_settings(check)
    mapping = MappingConfig(
        name=model.name,
        function=model.function,
        source=SourceSpec(type=source_type, settings=source_settings),
        enabled=model.enabled,
        **values,
    )
    validate = getattr(source_cls, "validate_mapping", None)
    for problem in validate(mapping) if callable(validate) else ():
        check.fail(problem.message, key=problem.setting)
    if len(errors) > start:
        return None
    return mapping


_MAPPING_SPELLINGS = tuple(
    spelling
    for name, spellings in field_aliases(MappingModel).items()
    if name != "source"
    for spelling in spellings
)
"""Every spelling of a mapping's own keys and settings (listed as known keys by the source
settings of a mapping written without ``source:``)."""


def _ported_source(
    raw: dict[str, Any], prefix: KeyPath, locate: Locate, errors: list[ConfigError]
) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
    """A mapping without ``source:`` that names its source as SAM / CloudFormation do:
    ``(the mapping's own keys, source type, the keys for the source's settings)``."""
    try:
        found = derived_source_type(raw)
    except ValueError as e:
        naming = next(k for k in NAMING_PROPERTIES if k in raw)
        errors.append(ConfigError(str(e), locate((*prefix, naming), False)))
        return None
    if found is None:
        return None
    naming, source_type = found
    try:
        raw = mapping_settings(raw)
    except PortError as e:
        errors.append(ConfigError(str(e), locate((*prefix, e.key), False)))
        return None
    own = set(_MAPPING_SPELLINGS)
    mapping_keys = {k: v for k, v in raw.items() if k in own}
    source_keys = {naming: raw[naming]}
    source_keys.update((k, v) for k, v in raw.items() if k not in own and k != naming)
    mapping_keys["source"] = {"type": source_type}
    return mapping_keys, source_type, source_keys
