"""The execution environments of one function, run as Lambda runs them.

* On demand: an invocation that finds no idle environment starts one, up to the function's
  ``reserved_concurrency``; beyond that it is throttled (or waits in a queue of
  ``queue_size``, 0 by default). The invocation that started an environment waits for its
  init; its REPORT line carries ``Init Duration`` (a cold start).
* ``provisioned_concurrency`` environments are started and initialised before the function
  takes traffic, and replaced when they end; they are never stopped for idleness.
* An environment that waits on ``/next`` for ``idle_timeout`` seconds is stopped.
* A timeout kills the environment's whole process group at once; so does a crash. Either way
  the environment leaves the pool before anything else can be handed to it, and a fresh one
  starts when there is work for it.
* An init that fails (``/init/error``, the process exits, ``init_timeout`` passes) is
  reported, fails the invocation waiting for that environment, and the environment is
  stopped. A provisioned environment is started again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.abc import InvokerContext
from router.errors import ConfigError, Location
from router.invokers.results import function_error, throttled, timeout_result
from router.invokers.runtime import logs
from router.invokers.runtime.dispatch import Call, Dispatcher
from router.invokers.runtime.environment import STOP_GRACE, Environment, task_root
from router.invokers.runtime.metrics import FunctionMetrics
from router.invokers.runtime.protocol import State
from router.invokers.runtime.server import describe
from router.invokers.runtime.settings import RuntimeApiInvokerSettings, RuntimeSettings
from router.models import FunctionConfig, InvokeResult, Outcome

logger = logging.getLogger(__name__)

_COMING = frozenset(
    {State.STARTED, State.INVOCATION_RESPONSE, State.INVOCATION_ERROR_RESPONSE, State.RESPONSE_SENT}
)
"""States of an environment that will ask for an invocation soon (initialising, or answering
the one it had)."""
_PROVISIONED_BACKOFF_CAP = 60.0


@dataclass(frozen=True, slots=True)
class InitFailure:
    """Why an environment's init failed, and what the invocation waiting for it gets."""

    error_type: str
    status: str
    """``error`` or ``timeout`` (INIT_REPORT's Status)."""
    payload: Any = None
    """The runtime's own error (``/init/error``); None: built per invocation."""
    message: str = ""

    def describe(self) -> str:
        if self.payload is not None:
            return describe(self.payload, self.error_type)
        return f"{self.error_type}: {self.message}"

    def result_for(self, call: Call, timeout: float) -> InvokeResult:
        if self.status == "timeout":
            return dataclasses.replace(
                timeout_result(call.request_id, timeout),
                detail=f"the execution environment did not initialise: {self.message}",
            )
        payload = self.payload
        if payload is None:
            payload = {
                "errorType": self.error_type,
                "errorMessage": f"RequestId: {call.request_id} Error: {self.message}",
            }
        return function_error(payload, detail=self.describe())


def exit_status(code: int | None) -> str:
    """How Lambda words a runtime's exit: ``exit status 1``, ``signal: killed``."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-code)
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {code}"


def default_path() -> str:
    """An environment's PATH: the router's, with the directory of the router's Python first
    (so ``python`` is the interpreter the router runs on, where awslambdaric is installed)."""
    return os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])


def runtime_problems(runtime: RuntimeSettings) -> list[tuple[str, str]]:
    """(key under ``runtime``, message) for a working directory or a command that cannot
    work. Touches nothing but the file system."""
    cwd = task_root(runtime.cwd)
    if not cwd.is_dir():
        return [("cwd", f"{cwd} is not a directory (the runtime's working directory)")]
    program = runtime.command[0]
    if "/" in program:
        path = cwd / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            return [("command", f"{program!r} is not an executable file (from {cwd})")]
        return []
    env_path = runtime.env.get("PATH")
    search = env_path.reveal() if env_path is not None else default_path()
    if shutil.which(program, path=search) is None:
        return [
            (
                "command",
                f"{program!r} is not found on the environment's PATH ({search}); give a "
                "path, or set runtime.env.PATH",
            )
        ]
    return []


class EnvironmentPool:
    """Starts, reuses, recycles and stops the environments of one function."""

    def __init__(
        self,
        function: FunctionConfig,
        settings: RuntimeApiInvokerSettings,
        context: InvokerContext,
        metrics: FunctionMetrics,
        *,
        inherited: Mapping[str, str] | None = None,
        initialization_type: str | None = None,
    ) -> None:
        """``inherited``: variables every environment starts from, under Lambda's and the
        function's own (none: a clean environment, as on Lambda). ``initialization_type``:
        ``AWS_LAMBDA_INITIALIZATION_TYPE`` of every environment (none: ``provisioned-
        concurrency`` or ``on-demand``, as each was started)."""
        assert settings.runtime is not None
        self.function = function.name
        self.settings = settings
        self.runtime: RuntimeSettings = settings.runtime
        self.timeout = function.timeout
        self.arn = function.invoked_arn
        self.key_path = f"functions.{function.name}.runtime"
        self.context = context
        self.metrics = metrics
        self.dispatcher = Dispatcher(lifo=True)
        self.environments: list[Environment] = []
        self.limit = settings.concurrency_limit
        self.queue_size = settings.queue_limit()
        self.cwd = Path.cwd()
        self._numbers = itertools.count(1)
        self._stopping: set[asyncio.Task[None]] = set()
        self._all: set[Environment] = set()
        """Every environment whose process may still run (retired ones included)."""
        self._provisioned_failures = 0
        self._provisioned_retry: asyncio.TimerHandle | None = None
        self._variables: dict[str, str] = {}
        self._inherited = dict(inherited or {})
        self._initialization_type = initialization_type
        self._closed = False
        self._system_info = settings.system_log_level != "WARN"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the command and the working directory, then start the provisioned
        environments and wait (up to ``init_timeout``) until they are initialised. An init
        that fails is reported and retried; it does not fail the start."""
        for key, message in runtime_problems(self.runtime):
            raise ConfigError(message, Location(path=f"{self.key_path}.{key}"))
        self.cwd = task_root(self.runtime.cwd)
        self._variables = self._base_variables()
        for _ in range(self.settings.provisioned_concurrency):
            self._spawn(provisioned=True)
        waiting = [env.ready.wait() for env in self.environments]
        if waiting:
            # Each init ends by itself within init_timeout (the environment is killed then).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.runtime.init_timeout + 1.0):
                    await asyncio.gather(*waiting)
            ready = sum(1 for env in self.environments if env.init_duration is not None)
            logger.info(
                "function %s: %d of %d provisioned environments initialised",
                self.function,
                ready,
                self.settings.provisioned_concurrency,
            )

    async def aclose(self) -> None:
        self._closed = True
        if self._provisioned_retry is not None:
            self._provisioned_retry.cancel()
        environments = list(self.environments)
        for env in environments:
            self._retire(env, "shutdown")
        self.dispatcher.cancel_all()
        await asyncio.gather(
            *(env.stop() for env in environments), *self._stopping, return_exceptions=True
        )
        # Environments killed earlier (timeouts) may still be reaping their process.
        for env in list(self._all):
            env.kill()
        await asyncio.gather(*(env.task for env in list(self._all)), return_exceptions=True)

    def _base_variables(self) -> dict[str, str]:
        """The variables every environment of the function gets (Lambda's, then the
        function's own)."""
        region = self.arn.split(":")[3] if self.arn.count(":") >= 6 else ""
        region = region or "us-east-1"
        variables = {
            **self._inherited,
            "PATH": default_path(),
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "AWS_LAMBDA_FUNCTION_NAME": self.function,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.settings.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.function}",
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "LAMBDA_TASK_ROOT": str(self.cwd),
        }
        handler = self.runtime.handler_name
        if handler is not None:
            variables["_HANDLER"] = handler
        variables.update({k: v.reveal() for k, v in self.runtime.env.items()})
        return variables

    def variables(self, env: Environment) -> dict[str, str]:
        return {
            **self._variables,
            "AWS_LAMBDA_RUNTIME_API": env.server.address,
            "AWS_LAMBDA_LOG_STREAM_NAME": env.log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": self._initialization_type
            or ("provisioned-concurrency" if env.provisioned else "on-demand"),
        }

    # -- admission and scaling -------------------------------------------------------------

    def admit(self, call: Call) -> InvokeResult | None:
        """Hand ``call`` to an idle environment or queue it for one (None), or throttle."""
        if self.limit == 0:
            return self._throttle("reserved_concurrency is 0: every invocation is throttled")
        if self.dispatcher.offer(call):
            return None
        coming = self._coming()
        queued = len(self.dispatcher.queue)
        if (
            queued < coming
            or len(self.environments) < self.limit
            or queued - coming < self.queue_size
        ):
            self.dispatcher.enqueue(call)
            self.scale()
            return None
        return self._throttle(
            f"all {len(self.environments)} environments of {self.function} are busy "
            f"(reserved_concurrency {self.limit})"
        )

    def _throttle(self, detail: str) -> InvokeResult:
        self.metrics.throttles += 1
        payload = {"errorType": "TooManyRequestsException", "errorMessage": "Rate Exceeded."}
        return throttled(detail, payload=payload)

    def _coming(self) -> int:
        return sum(1 for env in self.environments if env.session.state in _COMING)

    def scale(self) -> None:
        """Start what is missing: provisioned environments, and one environment for each
        queued invocation that no environment will take soon."""
        if self._closed:
            return
        provisioned = sum(1 for env in self.environments if env.provisioned)
        while (
            provisioned < self.settings.provisioned_concurrency
            and self._provisioned_retry is None
            and len(self.environments) < self.limit
        ):
            self._spawn(provisioned=True)
            provisioned += 1
        need = len(self.dispatcher.queue) - self._coming()
        while need > 0 and len(self.environments) < self.limit:
            self._spawn(provisioned=False)
            need -= 1

    def _spawn(self, *, provisioned: bool) -> Environment:
        env = Environment(self, next(self._numbers), provisioned=provisioned)
        self.environments.append(env)
        self._all.add(env)
        env.task.add_done_callback(lambda _: self._all.discard(env))
        return env

    def _retire(self, env: Environment, reason: str) -> bool:
        """Take ``env`` out of service (idempotent); True the first time."""
        if env.retired:
            return False
        env.retired = reason
        if env in self.environments:
            self.environments.remove(env)
        env.stop_idle_timer()
        env.init_timer.cancel()
        self.metrics.stopped[reason] += 1
        return True

    def _stop_later(self, env: Environment, grace: float = STOP_GRACE) -> None:
        task = asyncio.create_task(env.stop(grace))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # -- what environments report ----------------------------------------------------------

    def environment_ready(self, env: Environment) -> None:
        env.init_timer.cancel()
        duration = asyncio.get_running_loop().time() - env.created
        env.init_duration = duration
        self.metrics.init_duration.observe(duration)
        if env.provisioned:
            self._provisioned_failures = 0
            if self._platform_lines():
                logs.platform(self.function, logs.init_report_line(duration * 1000))
        env.ready.set()

    def handed(self, env: Environment, call: Call) -> None:
        self.metrics.queue_wait.observe(call.taken_at - call.queued_at)
        if env.cold:
            env.cold = False
            call.init_duration = env.init_duration
            self.metrics.cold_starts += 1
        if self._platform_lines():
            logs.platform(self.function, logs.start_line(call.request_id))

    def rejected(self, env: Environment, request_id: str) -> None:
        logger.info(
            "function %s: environment %s answered for request %s, which it does not hold",
            self.function,
            env.name,
            request_id,
        )

    def init_failed(self, env: Environment, payload: Any, error_type: str) -> None:
        """The runtime posted ``/init/error``."""
        self._fail_init(env, InitFailure(error_type, "error", payload=payload), stop=True)

    def init_timed_out(self, env: Environment) -> None:
        if env.retired or env.session.state is not State.STARTED:
            return
        message = f"no /next within init_timeout ({self.runtime.init_timeout:g} s)"
        env.kill()
        self._fail_init(env, InitFailure("Sandbox.Timedout", "timeout", message=message))

    def _fail_init(self, env: Environment, failure: InitFailure, *, stop: bool = False) -> None:
        duration = asyncio.get_running_loop().time() - env.created
        if not self._retire(env, "init_error"):
            return
        self.metrics.init_errors += 1
        logs.platform(
            self.function,
            logs.init_report_line(duration * 1000, failure.status, failure.error_type),
        )
        text = failure.describe()
        logger.warning(
            "function %s: environment %s failed to initialise: %s", self.function, env.name, text
        )
        self.context.report_init_error(f"function initialisation failed: {text}")
        if env.provisioned:
            self._provisioned_failures += 1
            delay = min(_PROVISIONED_BACKOFF_CAP, 2.0 ** (self._provisioned_failures - 1))
            if self._provisioned_retry is None and not self._closed:
                self._provisioned_retry = asyncio.get_running_loop().call_later(
                    delay, self._retry_provisioned
                )
        else:
            # On Lambda the invocation that started a failed environment fails with it.
            call = self.dispatcher.pop_queued()
            if call is not None:
                call.platform_error = failure.error_type
                call.finish(failure.result_for(call, self.timeout))
        env.ready.set()
        if stop:
            self._stop_later(env)
        self.scale()

    def _retry_provisioned(self) -> None:
        self._provisioned_retry = None
        self.scale()

    def idle_expired(self, env: Environment) -> None:
        env.idle_timer = None
        if env.retired or env.provisioned:
            return
        if not self.dispatcher.retract(env.session):
            return  # it got an invocation in this very moment
        self._retire(env, "idle")
        logger.info(
            "function %s: stopping environment %s (idle for %g s)",
            self.function,
            env.name,
            self.runtime.idle_timeout,
        )
        self._stop_later(env)

    def timed_out(self, call: Call) -> None:
        """``call`` ran past the function's timeout: its environment is killed at once."""
        env = call.session.owner if call.session is not None else None
        if isinstance(env, Environment):
            env.drain_output()
        logs.platform(
            f"{self.function} {call.request_id}",
            f"Task timed out after {self.timeout:.2f} seconds",
        )
        if isinstance(env, Environment):
            self._retire(env, "timeout")
            self.dispatcher.retract(env.session)
            env.kill()
            self.scale()

    def exited(self, env: Environment, code: int | None, failure: str) -> None:
        """The environment's process ended (or never started)."""
        retired = env.retired
        if env in self.environments:
            self.environments.remove(env)
        self.dispatcher.retract(env.session)
        if retired:
            self.scale()
            return
        session = env.session
        if failure:
            self._fail_init(env, InitFailure("Runtime.InvalidEntrypoint", "error", message=failure))
            return
        status = exit_status(code)
        if session.state is State.STARTED:
            message = f"Runtime exited with error: {status}"
            self._fail_init(env, InitFailure("Runtime.ExitError", "error", message=message))
            return
        self._retire(env, "crash")
        env.drain_output()
        logger.warning("function %s: environment %s exited (%s)", self.function, env.name, status)
        call = session.current
        if call is not None and call.available:
            call.platform_error = "Runtime.ExitError"
            payload = {
                "errorType": "Runtime.ExitError",
                "errorMessage": (
                    f"RequestId: {call.request_id} Error: Runtime exited with error: {status}"
                ),
            }
            call.finish(function_error(payload))
        self.scale()

    def report(self, call: Call, result: InvokeResult, duration: float) -> None:
        """END and REPORT lines, memory metrics."""
        env = call.session.owner if call.session is not None else None
        max_memory = env.sample_memory(duration) if isinstance(env, Environment) else 0
        self.metrics.memory.observe(max_memory)
        status = error_type = ""
        if result.outcome is Outcome.TIMEOUT:
            status = "timeout"
        elif call.platform_error:
            status, error_type = "error", call.platform_error
        if not self._platform_lines():
            return
        request_id = call.request_id
        logs.platform(self.function, logs.end_line(request_id))
        logs.platform(
            self.function,
            logs.report_line(
                request_id,
                duration_ms=duration * 1000,
                memory_size=self.settings.memory_size,
                max_memory_mb=max_memory,
                init_duration_ms=None if call.init_duration is None else call.init_duration * 1000,
                status=status,
                error_type=error_type,
            ),
        )

    def _platform_lines(self) -> bool:
        """START, END, REPORT (and a successful INIT_REPORT) are written: INFO platform
        lines, dropped by ``system_log_level: WARN`` as on Lambda."""
        return self._system_info and logs.logger.isEnabledFor(logging.INFO)

    def counts(self) -> dict[str, int]:
        idle = {id(session) for session in self.dispatcher.idle_sessions()}
        counts = {"initialising": 0, "idle": 0, "busy": 0}
        for env in self.environments:
            if env.session.state is State.STARTED:
                counts["initialising"] += 1
            elif id(env.session) in idle:
                counts["idle"] += 1
            else:
                counts["busy"] += 1
        return counts

    async def wait_idle(self, count: int) -> None:
        await self.dispatcher.wait_idle(count)
