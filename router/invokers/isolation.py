"""``isolation: process``: a ``python`` function's handler runs in worker processes of its own.

Each function gets its own interpreter, so module-level state (Powertools' ``cold_start``,
a Logger's appended keys, caches, monkey-patches, ``os.environ`` changes) never leaks from
one function into another, and a handler that blocks, leaks or crashes cannot take the
router with it.

The workers are managed execution environments of the hosted Runtime API
(:mod:`router.invokers.runtime.pool`) running the router's own minimal runtime
(:mod:`router.invokers.worker`); the pool already starts them on demand, kills the process
group of one whose invocation overruns the timeout, reports and replaces one that crashed,
keeps one warm, logs their output with the function's name and request id, and counts all
of it. What differs from ``invoker: runtime-api``:

* one worker is started (and the handler imported) before the function takes traffic, and
  is always replaced when it ends; up to ``max_processes`` run at once, each taking one
  invocation at a time; the ones started on demand stop after :data:`IDLE_TIMEOUT` idle;
* invocations that find every worker busy wait for one (as they wait for a thread in the
  shared mode), at most :data:`INIT_TIMEOUT` plus the timeout, then they are throttled;
* workers inherit the router's environment (a handler sees what it saw in-process), under
  the variables Lambda sets (``AWS_LAMBDA_FUNCTION_NAME``, ...);
* no START / END / REPORT lines (the shared mode writes none either).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from router.abc import InvokerContext, MetricFamily, SettingsProblem
from router.errors import ConfigError, Location
from router.invokers.handlers import HandlerError, handler_directory
from router.invokers.results import timeout_result
from router.invokers.runtime import logs
from router.invokers.runtime.settings import RuntimeApiInvokerSettings, RuntimeSettings
from router.invokers.runtime_api import RuntimeApiInvoker
from router.models import MAX_PAYLOAD_BYTES, FunctionConfig, Invocation, InvokeResult

if TYPE_CHECKING:
    from router.invokers.python import PythonInvokerSettings

logger = logging.getLogger(__name__)

INIT_TIMEOUT = 60.0
"""Seconds a worker may take to import its handler (the shared mode imports without limit;
Lambda's 10 s would refuse heavy imports)."""
IDLE_TIMEOUT = 300.0
"""Seconds a worker started on demand may wait for work before it is stopped."""
QUEUE_SIZE = 1_000_000
"""Invocations that may wait for a busy worker: the pipeline's own concurrency bounds them."""

_INIT_FAILED = "function initialisation failed: "


def worker_command(settings: PythonInvokerSettings, *, check: bool = False) -> list[str]:
    command = [sys.executable, "-m", "router.invokers.worker"]
    directory = handler_directory(settings.handler, settings.path)
    if directory is not None:
        command += ["--path", str(directory)]
    command += ["--log-level", str(logs.logger.getEffectiveLevel())]
    if check:
        command.append("--check")
    return [*command, settings.handler]


def inherited_environment() -> dict[str, str]:
    """The router's environment, with the directory the router is imported from last on
    ``PYTHONPATH`` (so a worker finds ``router.invokers.worker`` however the router was
    started)."""
    variables = dict(os.environ)
    home = str(Path(__file__).resolve().parents[2])
    python_path = [p for p in variables.get("PYTHONPATH", "").split(os.pathsep) if p]
    if home not in python_path:
        variables["PYTHONPATH"] = os.pathsep.join([*python_path, home])
    return variables


def check(function: FunctionConfig) -> list[SettingsProblem]:
    """Import the handler in a process of its own (never in the router's: importing it
    would run the function's module-level code there) and report what is wrong, as the
    shared mode's in-process import does."""
    from router.invokers.python import PythonInvokerSettings

    settings = function.settings
    assert isinstance(settings, PythonInvokerSettings)
    try:
        command = worker_command(settings, check=True)
    except HandlerError as e:
        return [SettingsProblem((e.key,), e.message)]
    # The region variables Lambda sets (and a worker of ``router run`` gets): a module that
    # makes a boto3 client at import time imports here as it does there.
    region = function.invoked_arn.split(":")[3] or "us-east-1"
    variables = {
        **inherited_environment(),
        "AWS_LAMBDA_FUNCTION_NAME": function.name,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }
    try:
        done = subprocess.run(
            command,
            env=variables,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=INIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        message = f"importing handler {settings.handler!r} took more than {INIT_TIMEOUT:g} s"
        return [SettingsProblem(("handler",), message)]
    except OSError as e:
        return [SettingsProblem(("handler",), f"cannot start a worker process: {e}")]
    if done.returncode == 0:
        return []
    for line in reversed(done.stdout.splitlines()):
        try:
            problem: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(problem, dict) and "message" in problem:
            return [SettingsProblem((str(problem.get("key", "handler")),), problem["message"])]
    # The process ended without a word: the module's import killed it (os._exit, a crash).
    said = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
    tail = f": {said[-1]}" if said else ""
    message = (
        f"importing handler {settings.handler!r} ended its worker process "
        f"(exit status {done.returncode}){tail}"
    )
    return [SettingsProblem(("handler",), message)]


class ProcessIsolation:
    """The worker processes of one ``python`` function."""

    def __init__(
        self, function: FunctionConfig, settings: PythonInvokerSettings, context: InvokerContext
    ) -> None:
        self.function = function
        self.settings = settings
        self.context = context
        self._init_errors: list[str] = []
        self.runtime: RuntimeApiInvoker | None = None

    def _build(self) -> RuntimeApiInvoker:
        settings = self.settings
        runtime_settings = RuntimeApiInvokerSettings(
            reserved_concurrency=settings.max_processes,
            provisioned_concurrency=1,
            memory_size=settings.memory_size,
            system_log_level="WARN",
            queue_size=QUEUE_SIZE,
            max_payload_bytes=MAX_PAYLOAD_BYTES,
            runtime=RuntimeSettings(
                command=worker_command(settings),
                handler=settings.handler,
                init_timeout=INIT_TIMEOUT,
                idle_timeout=IDLE_TIMEOUT,
            ),
        )
        function = FunctionConfig(
            name=self.function.name,
            invoker="runtime-api",
            timeout=self.function.timeout,
            settings=runtime_settings,
            arn=self.function.arn,
            account_id=self.function.account_id,
        )
        context = InvokerContext(store=self.context.store, report_init_error=self._init_error)
        # The first worker starts before traffic, but its first invocation is the handler's
        # cold start all the same (Powertools reads "provisioned-concurrency" as never cold).
        return RuntimeApiInvoker(
            function,
            context,
            inherited_environment=inherited_environment(),
            initialization_type="on-demand",
        )

    def _init_error(self, message: str) -> None:
        self._init_errors.append(message)
        self.context.report_init_error(message)

    def _where(self, key: str) -> Location:
        return Location(path=f"functions.{self.function.name}.{key}")

    async def start(self) -> None:
        """Start the first worker and wait until it has imported the handler; a handler that
        does not import is a :class:`ConfigError`, as in the shared mode."""
        if self.runtime is not None:
            return
        try:
            runtime = self._build()
        except HandlerError as e:
            raise ConfigError(e.message, self._where(e.key)) from None
        await runtime.start()
        if runtime.idle_runtimes == 0 and self._init_errors:
            await runtime.aclose()
            message = self._init_errors[-1].removeprefix(_INIT_FAILED)
            message = message.removeprefix("Runtime.ImportModuleError: ")
            raise ConfigError(message, self._where("handler"))
        self.runtime = runtime

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        runtime = self.runtime
        if runtime is None:
            raise RuntimeError("PythonInvoker.invoke() called before start()")
        if invocation.deadline <= time.time():
            return timeout_result(invocation.request_id, self.function.timeout)
        return await runtime.invoke(invocation)

    def metrics(self) -> list[MetricFamily]:
        return [] if self.runtime is None else self.runtime.metrics()

    async def wait_idle(self, count: int = 1) -> None:
        """Wait until ``count`` workers wait for an invocation."""
        if self.runtime is not None:
            await self.runtime.wait_idle(count)

    async def aclose(self) -> None:
        runtime, self.runtime = self.runtime, None
        if runtime is not None:
            await runtime.aclose()
