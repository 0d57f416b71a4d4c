"""The hosted Lambda Runtime API and the execution environments behind it.

* :mod:`.protocol`: routes, status codes, headers and error bodies exactly as AWS's Runtime
  Interface Emulator answers them, and the per-runtime state machine they follow.
* :mod:`.dispatch`: invocations waiting for a runtime, and runtimes waiting on ``/next``.
* :mod:`.server`: the aiohttp handlers of one Runtime API listener.
* :mod:`.environment`: one managed execution environment (a process group, its own
  listener, its output).
* :mod:`.pool`: starting environments on demand up to the reserved concurrency, keeping the
  provisioned ones warm, stopping idle ones, replacing timed-out and crashed ones.
* :mod:`.logs` and :mod:`.metrics`: ``START`` / ``END`` / ``REPORT`` lines and the
  per-function metrics.

:class:`router.invokers.runtime_api.RuntimeApiInvoker` puts them together.
"""
