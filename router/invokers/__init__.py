"""Invokers: how the router calls a function.

* :class:`router.invokers.python.PythonInvoker` calls a ``module:function`` handler in-process.
* :class:`router.invokers.http.HttpInvoker` speaks the Lambda Invoke API over HTTP.
* :class:`router.invokers.runtime_api.RuntimeApiInvoker` hosts the Lambda Runtime API that
  unmodified Lambda runtimes pull invocations from.

The registry (:mod:`router.registry`) imports them lazily by YAML ``invoker:`` name. Every one
classifies each ending into an :class:`router.models.InvokeResult` and never raises for
function or transport problems; the helpers in :mod:`router.invokers.results` keep the
classification and the error shapes identical across them.
"""
