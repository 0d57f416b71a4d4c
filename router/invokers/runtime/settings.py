"""YAML keys of ``invoker: runtime-api`` and of its ``runtime:`` block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from router.invokers.runtime.protocol import MAX_RESPONSE_BYTES
from router.models import PluginSettings
from router.secrets import Secret

DEFAULT_LISTEN = "127.0.0.1:9001"
DEFAULT_RESERVED_CONCURRENCY = 10
"""Environments a managed function may run at once when ``reserved_concurrency`` is not set
(each one is a process on this machine; Lambda's account default of 1000 would not fit)."""

RESERVED_VARIABLES = {
    "AWS_LAMBDA_RUNTIME_API": "the router sets it to each environment's own Runtime API",
    "AWS_LAMBDA_FUNCTION_NAME": "it is the function's name",
    "AWS_LAMBDA_FUNCTION_VERSION": "it is always $LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "set memory_size instead",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "set provisioned_concurrency instead",
    "AWS_LAMBDA_LOG_GROUP_NAME": "it is /aws/lambda/<function>",
    "AWS_LAMBDA_LOG_STREAM_NAME": "each environment gets its own",
    "AWS_REGION": "it comes from the function's arn (set arn: to choose the region)",
    "AWS_DEFAULT_REGION": "it comes from the function's arn (set arn: to choose the region)",
    "_HANDLER": "set runtime.handler instead",
    "LAMBDA_TASK_ROOT": "set runtime.cwd instead",
}
"""Variables Lambda reserves (an environment cannot override them), and why."""


_CREDENTIAL_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "AUTH")
"""Words in a variable's name that say its value is a credential."""


def _text(value: str | float) -> str:
    """A YAML scalar as an environment variable's text (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port). Port 0 picks a free port."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen {value!r} must be host:port, e.g. 127.0.0.1:9001")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen {value!r}: port must be between 0 and 65535")
    return host, port


class RuntimeSettings(PluginSettings):
    """``runtime:``: the command that starts one execution environment of the function."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: list[str] = Field(min_length=1)
    """argv of the runtime, e.g. ``["python", "-m", "awslambdaric", "app.handler"]``. The
    first element is looked up on the environment's PATH (the directory of the router's own
    Python first), or relative to ``cwd`` when it contains a ``/``."""
    env: dict[str, Secret] = Field(default_factory=dict)
    """Extra variables (the function's environment variables); values are kept out of logs.
    Those whose name says they hold a credential (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``,
    ``*KEY*``...) are references in a YAML file (``${NAME}``, ``{file: PATH}``)."""
    cwd: str | None = None
    """Working directory and ``LAMBDA_TASK_ROOT``; relative to the router's working
    directory, which is the default."""
    handler: str | None = None
    """``_HANDLER``; defaults to the command's last argument (a container image's CMD)."""
    idle_timeout: float = Field(default=300.0, gt=0, le=86_400)
    """Seconds an environment started on demand may wait for work before it is stopped."""
    init_timeout: float = Field(default=10.0, gt=0, le=900)
    """Seconds an environment gets from start to its first ``/next`` (Lambda: 10)."""

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the first element of command must name the program to run")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _plain_variables(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            name: Secret(_text(item))
            if isinstance(name, str)
            and not any(word in name.upper() for word in _CREDENTIAL_WORDS)
            and isinstance(item, str | int | float | bool)
            and not (isinstance(item, str) and item.strip().startswith("${"))
            else item
            for name, item in value.items()
        }

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, Secret]) -> dict[str, Secret]:
        for name in value:
            why = RESERVED_VARIABLES.get(name)
            if why is not None:
                raise ValueError(f"{name} is reserved by Lambda: {why}")
            if not name or "=" in name or "\0" in name:
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return value

    @property
    def handler_name(self) -> str | None:
        if self.handler is not None:
            return self.handler
        return self.command[-1] if len(self.command) > 1 else None


class RuntimeApiInvokerSettings(PluginSettings):
    """YAML keys of ``invoker: runtime-api``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str | None = None
    """Runtimes started outside the router: the address they connect to
    (``AWS_LAMBDA_RUNTIME_API``), default 127.0.0.1:9001. Port 0 picks a free port. Not
    used with ``runtime``: each managed environment gets its own listener on 127.0.0.1."""
    runtime: RuntimeSettings | None = None
    """The router starts and manages the execution environments itself."""
    reserved_concurrency: int | None = Field(default=None, ge=0, le=1000)
    """Managed: most environments at once (default 10); beyond, invocations are throttled.
    0 throttles every invocation, as on Lambda."""
    provisioned_concurrency: int = Field(default=0, ge=0, le=1000)
    """Managed: environments kept started and initialised ahead of traffic."""
    system_log_level: Literal["DEBUG", "INFO", "WARN"] = "INFO"
    """Managed: ``WARN`` drops the START, END and REPORT lines (INFO platform lines), as
    Lambda's ``LoggingConfig.SystemLogLevel`` does; the function's own output stays."""
    memory_size: int = Field(default=128, ge=128, le=10240)
    """Managed: ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` and ``Memory Size`` in REPORT lines
    (not enforced)."""
    queue_size: int | None = Field(default=None, ge=0, le=1_000_000)
    """Invocations that may wait when no runtime is free (and, managed, no more environments
    may start); beyond, they are throttled. Default 100 for external runtimes, 0 for managed
    environments (throttled at once, as on Lambda)."""
    queue_timeout: float | None = Field(default=None, gt=0, le=3600)
    """Seconds an invocation may wait for a runtime to take it before it is throttled
    (default: the function's timeout). The timeout itself starts when a runtime takes it."""
    max_payload_bytes: int = Field(default=MAX_RESPONSE_BYTES, ge=1, le=1 << 30)
    """Largest response (and event) a runtime may post; the RIE's 6 MiB + 100 bytes."""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parse_listen(value)
        return value.strip()

    @model_validator(mode="after")
    def _check_mode(self) -> RuntimeApiInvokerSettings:
        if self.runtime is None:
            managed_only = [
                key
                for key in (
                    "reserved_concurrency",
                    "provisioned_concurrency",
                    "memory_size",
                    "system_log_level",
                )
                if key in self.model_fields_set
            ]
            if managed_only:
                raise ValueError(
                    f"{', '.join(managed_only)} need runtime.command: the router starts the "
                    "environments then; with runtimes started outside the router, "
                    "concurrency is the number of runtimes you start"
                )
            return self
        if self.listen is not None:
            raise ValueError(
                "listen is for runtimes started outside the router; with runtime.command "
                "each environment gets its own Runtime API on 127.0.0.1 (remove listen)"
            )
        if self.provisioned_concurrency > self.concurrency_limit:
            raise ValueError(
                f"provisioned_concurrency ({self.provisioned_concurrency}) cannot exceed "
                f"reserved_concurrency ({self.concurrency_limit})"
            )
        return self

    @property
    def managed(self) -> bool:
        return self.runtime is not None

    @property
    def concurrency_limit(self) -> int:
        if self.reserved_concurrency is not None:
            return self.reserved_concurrency
        return max(DEFAULT_RESERVED_CONCURRENCY, self.provisioned_concurrency)

    @property
    def listen_address(self) -> str:
        return self.listen or DEFAULT_LISTEN

    def queue_limit(self) -> int:
        if self.queue_size is not None:
            return self.queue_size
        return 0 if self.managed else 100
