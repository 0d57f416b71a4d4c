"""Pydantic models of the YAML file, and translation of their errors into located messages.

These models check shapes and types only (strict: ``"5"`` is not an integer). Limits that
depend on the source type (batch size, retries, starting positions...) are checked by each
setting's rule (:mod:`router.config.rules`) against the source's
:class:`~router.abc.SourceTraits`.
Per-plug-in blocks (``source``, a function's invoker keys, typed destinations) stay plain
mappings here and are validated by the plug-in's own ``Settings`` model.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from router.config.yaml_lines import KeyPath
from router.errors import ConfigError, Location
from router.models import ACCOUNT_ID
from router.secrets import Secret, SecretUrl

M = TypeVar("M", bound=BaseModel)

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
FUNCTION_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


def aka(name: str, *aliases: str, default: Any = ..., description: str = "") -> Any:
    """A field written ``name`` or any of the AWS spellings in ``aliases``."""
    return Field(
        default,
        validation_alias=AliasChoices(name, *aliases),
        description=description or None,
    )


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9090")
    return value


class IngressCredentialModel(StrictModel):
    """An access key the ingress listener accepts SigV4 signatures of."""

    access_key_id: str = aka(
        "access_key_id", "AccessKeyId", "aws_access_key_id", description="e.g. AKIDEXAMPLE"
    )
    secret_access_key: Secret = aka(
        "secret_access_key",
        "SecretAccessKey",
        "aws_secret_access_key",
        description="a reference: ${NAME} or {file: PATH}",
    )


class IngressQueueModel(StrictModel):
    """``router.ingress.queue``: the durable asynchronous-invocation queue."""

    lease_timeout: float = Field(
        default=30.0,
        ge=5,
        le=3600,
        description="Seconds an event a replica took stays its own without being renewed; "
        "after that (the replica died) another replica delivers it",
    )
    poll_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between looks for events other replicas accepted or gave up",
    )


class IngressModel(StrictModel):
    """``router.ingress``: the listener of pushed events (Lambda's Invoke API and the
    other front-ends) and the durable asynchronous-invocation queue behind them."""

    listen: str = Field("127.0.0.1:9000", description="HOST:PORT of the ingress listener")
    credentials: list[IngressCredentialModel] = Field(
        default_factory=list,
        description="Access keys (one, or a list) whose SigV4 signatures are accepted; when "
        "set, requests that are not signed with one of them are refused (403)",
    )
    queue: IngressQueueModel = Field(default_factory=IngressQueueModel)
    retry_delay_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Scales Lambda's retry timing of the asynchronous queue (1 and 2 minutes "
        "after function errors, 1 s to 5 minutes after throttles, maximum_event_age): for "
        "tests and development only (e.g. 0.01); keep 1 in production",
    )

    @field_validator("credentials", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _check_host_port(value)


class ConsoleModel(StrictModel):
    """``router.console``: the web console at /console on the operations listener."""

    allow_changes: bool = Field(
        False,
        description="Show and accept the console's enable / disable and replay buttons "
        "(false: the console only shows)",
    )


class RouterSettingsModel(StrictModel):
    """The optional top-level ``router:`` block."""

    store: SecretUrl | None = Field(
        None,
        description="SQLAlchemy URL of the store (default: sqlite+aiosqlite:///router.db); "
        "a password in it as ${NAME}, or the whole URL as ${NAME} or {file: PATH}",
    )
    deleted_mapping_retention: float = Field(
        604_800.0,
        ge=0,
        le=31_536_000,
        description="Seconds the checkpoints of a mapping the YAML deleted are kept: declared "
        "again under its name (same source type) within that time, it resumes them; 0 drops "
        "them at once",
    )
    allow_plaintext_secrets: bool = Field(
        False,
        description="Accept secrets written in place (they are then stored as written) "
        "instead of ${NAME} / {file: PATH} references",
    )
    http_listen: str = Field(
        "127.0.0.1:9090", description="HOST:PORT of the /metrics, /healthz, /readyz listener"
    )
    account_id: str = Field(
        ACCOUNT_ID,
        pattern=r"^\d{12}$",
        description="The account of the ARNs the router makes up: function ARNs "
        "(invokedFunctionArn, destination records) and the events' ARNs and account ids "
        "(schedule, EventBridge, function URL, RabbitMQ broker)",
    )
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_filter_patterns: int = Field(
        5, ge=1, le=1000, description="Filter patterns allowed per mapping (AWS: 5)"
    )
    poll_interval: float = Field(
        2.0, gt=0, le=300, description="Seconds between checks for SQL changes (SQLite store)"
    )
    shutdown_timeout: float = Field(
        30.0, ge=0, le=3600, description="Seconds in-flight batches get to finish on SIGTERM"
    )
    readiness_failure_grace: float = Field(
        300.0,
        ge=0,
        le=86400,
        description="Seconds a mapping may fail (PROBLEM) before /readyz answers 503",
    )
    console: ConsoleModel = Field(
        default_factory=lambda: ConsoleModel.model_validate({}),
        description="The web console at /console on the operations listener",
    )
    ingress: IngressModel | None = Field(
        None,
        description="The ingress listener (Invoke API and other pushed events) and the "
        "durable asynchronous-invocation queue; absent: neither runs",
    )

    @field_validator("http_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _check_host_port(value)


class DestinationConfigModel(StrictModel):
    on_failure: dict[str, Any] | None = aka("on_failure", "OnFailure", default=None)
    on_success: dict[str, Any] | None = aka("on_success", "OnSuccess", default=None)


class EventInvokeConfigModel(StrictModel):
    """A function's asynchronous invocation settings (Lambda's
    ``PutFunctionEventInvokeConfig``); the ranges are checked with the function."""

    maximum_retry_attempts: int | None = aka(
        "maximum_retry_attempts",
        "MaximumRetryAttempts",
        default=None,
        description="Retries after a function error, 0-2 (default 2)",
    )
    maximum_event_age: int | None = aka(
        "maximum_event_age",
        "MaximumEventAgeInSeconds",
        default=None,
        description="Seconds an event is kept for delivery, 60-21600 (default 21600)",
    )
    destination_config: DestinationConfigModel | None = aka(
        "destination_config",
        "DestinationConfig",
        default=None,
        description="on_success / on_failure: {destination: ARN} or a typed destination",
    )


class FunctionModel(StrictModel):
    """Keys common to every function; the other keys of the block go to the invoker."""

    invoker: str = Field(description="python | http | runtime-api | lambda")
    timeout: float = Field(3.0, ge=1, le=900, description="Seconds, as Lambda's Timeout")
    arn: str = Field("", description="ARN the function reports as invokedFunctionArn")
    event_invoke_config: EventInvokeConfigModel | None = aka(
        "event_invoke_config",
        "EventInvokeConfig",
        default=None,
        description="How asynchronous Invoke calls (InvocationType=Event) are retried, aged "
        "out and recorded (Lambda's PutFunctionEventInvokeConfig)",
    )


class FilterModel(StrictModel):
    pattern: str | dict[str, Any] = aka(
        "pattern", "Pattern", description="EventBridge pattern: JSON text or a YAML mapping"
    )


class FilterCriteriaModel(StrictModel):
    filters: list[FilterModel] = aka("filters", "Filters")


class ScalingConfigModel(StrictModel):
    maximum_concurrency: int | None = aka("maximum_concurrency", "MaximumConcurrency", default=None)


class MappingKeys(StrictModel):
    """The keys of a ``mappings:`` entry that are not settings. The settings' keys are added
    to these from their declaration (:data:`router.config.rules.MappingModel`)."""

    name: str = Field(pattern=NAME_PATTERN, description="Unique name, [A-Za-z0-9_.-]{1,64}")
    function: str = aka("function", "FunctionName", description="A key of functions:")
    source: dict[str, Any] = Field(description="type: <source type> and its settings")
    enabled: bool = aka("enabled", "Enabled", default=True)


def field_aliases(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Every accepted spelling of each field of ``model``, the field name first."""
    out: dict[str, tuple[str, ...]] = {}
    for name, info in model.model_fields.items():
        spellings = [name]
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            spellings += [c for c in alias.choices if isinstance(c, str) and c != name]
        elif isinstance(alias, str) and alias != name:
            spellings.append(alias)
        elif info.alias and info.alias != name:
            spellings.append(info.alias)
        out[name] = tuple(spellings)
    return out


FUNCTION_KEYS = frozenset(
    spelling for spellings in field_aliases(FunctionModel).values() for spelling in spellings
)
"""Every spelling of the keys common to every function (the rest go to the invoker)."""


def used_key(raw: Mapping[str, Any], model: type[BaseModel], field: str) -> str:
    """The spelling of ``field`` the user wrote in ``raw`` (the field name if absent)."""
    for spelling in field_aliases(model).get(field, (field,)):
        if spelling in raw:
            return spelling
    return field


# -- errors -------------------------------------------------------------------------------

Locate = Callable[[KeyPath, bool], Location]
"""Turns a path into a Location; the flag says "point at the enclosing mapping's line"."""


def annotation_types(annotation: Any) -> list[Any]:
    """The classes a field annotation can hold (through Optional, unions, list, dict)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(annotation) for t in annotation_types(arg)]
    if origin in (list, tuple, dict):
        return [t for arg in get_args(annotation)[-1:] for t in annotation_types(arg)]
    return [annotation]


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model that validates the value at ``loc`` inside ``model``, if any."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue  # list items: the unwrapped annotation already is the item type
        field = None
        for name, spellings in field_aliases(current).items():
            if part in spellings:
                field = current.model_fields[name]
                break
        if field is None:
            return None
        nested = [
            t
            for t in annotation_types(field.annotation)
            if isinstance(t, type) and issubclass(t, BaseModel)
        ]
        current = nested[0] if nested else None
    return current


def _value_at(raw: Any, loc: tuple[int | str, ...]) -> Any:
    for part in loc:
        if isinstance(raw, Mapping) and part in raw:
            raw = raw[part]
            continue
        if isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
            continue
        return None
    return raw


_TYPE_NAMES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "datetime_type": "must be a date-time",
}


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_UNION_TAGS = {
    "datetime": "a date-time",
    "float": "a number",
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "dict[str,any]": "a mapping",
}


def translate(
    error: ValidationError,
    model: type[BaseModel],
    raw: Any,
    prefix: KeyPath,
    locate: Locate,
    also_known: tuple[str, ...] = (),
) -> list[ConfigError]:
    """One located :class:`ConfigError` per pydantic error, in words a YAML author uses.

    Values are never echoed (they may be secrets); the type the user gave is.
    """
    out: list[ConfigError] = []
    # A union (datetime | float | str) reports one error per member: merge them.
    unions: dict[tuple[int | str, ...], list[str]] = {}
    items: list[dict[str, Any]] = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        item: dict[str, Any] = dict(detail)
        if loc and isinstance(loc[-1], str) and loc[-1] in _UNION_TAGS and loc[:-1]:
            if loc[:-1] not in unions:
                unions[loc[:-1]] = []
                items.append({**item, "loc": loc[:-1], "type": "union"})
            unions[loc[:-1]].append(_UNION_TAGS[loc[-1]])
            continue
        items.append(item)
    for item in items:
        loc = tuple(item["loc"])
        kind = item["type"]
        ctx = item.get("ctx") or {}
        path = prefix + loc
        enclosing = False
        got = _yaml_type(item.get("input"))
        if kind == "union":
            nouns = unions[loc]
            either = ", ".join(nouns[:-1]) + f" or {nouns[-1]}" if len(nouns) > 1 else nouns[0]
            message = f"must be {either}, got {got}"
        elif kind == "extra_forbidden":
            message = _unknown_key(model, raw, loc, also_known if len(loc) == 1 else ())
        elif kind == "missing":
            message = "required key is missing"
            enclosing = True
        elif kind == "literal_error":
            message = f"must be one of: {ctx.get('expected', '')}"
        elif kind == "greater_than_equal":
            message = f"must be >= {_num(ctx.get('ge'))}"
        elif kind == "less_than_equal":
            message = f"must be <= {_num(ctx.get('le'))}"
        elif kind == "greater_than":
            message = f"must be > {_num(ctx.get('gt'))}"
        elif kind == "less_than":
            message = f"must be < {_num(ctx.get('lt'))}"
        elif kind == "string_pattern_mismatch":
            message = f"must match {ctx.get('pattern')}"
        elif kind in _TYPE_NAMES:
            message = f"{_TYPE_NAMES[kind]}, got {got}"
        elif kind == "value_error":
            message = str(ctx.get("error", item["msg"]))
        else:
            message = item["msg"][:1].lower() + item["msg"][1:]
        out.append(ConfigError(message, locate(path, enclosing)))
    return out


def _unknown_key(
    model: type[BaseModel], raw: Any, loc: tuple[int | str, ...], also_known: tuple[str, ...]
) -> str:
    key = loc[-1] if loc else ""
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return f"unknown key {key!r}"
    spellings = field_aliases(owner)
    here = _value_at(raw, loc[:-1])
    for name, names in spellings.items():
        if key in names:
            given = [s for s in names if isinstance(here, Mapping) and s in here and s != key]
            other = given[0] if given else name
            return f"{key!r} is the same key as {other!r}; give it once"
    known = sorted({*(s for names in spellings.values() for s in names), *also_known})
    close = difflib.get_close_matches(
        str(key), [*(s for names in spellings.values() for s in names), *also_known], n=1
    )
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r}; known keys: {', '.join(known)}"


def validate_model(
    model: type[M], raw: Any, prefix: KeyPath, locate: Locate, errors: list[ConfigError]
) -> M | None:
    """Validate ``raw`` with ``model``; on failure add located errors and return None."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        errors.extend(translate(e, model, raw, prefix, locate))
        return None
