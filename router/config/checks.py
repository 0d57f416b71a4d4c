"""Checks of a loaded configuration that go beyond its shape: each invoker's ``check`` hook
(a handler that does not import, settings every call would fail with), and loading a
configuration to run it."""

from __future__ import annotations

from router import registry
from router.config.loader import RouterConfig, load_config
from router.config.plugins import plugins_to_run
from router.errors import ConfigError, ConfigErrors


def check_functions(config: RouterConfig) -> list[ConfigError]:
    """One located error per problem the invokers' ``check`` hooks find, in file order."""
    errors: list[ConfigError] = []
    for function in config.functions.values():
        cls = registry.load("invoker", function.invoker)
        errors.extend(
            ConfigError(problem.message, config.locate_function(function.name, problem.path))
            for problem in cls.check(function)
        )
    return errors


def load_checked_config(path: str, *, to_run: bool = False) -> RouterConfig:
    """The configuration at ``path`` as ``router run`` needs it: valid, every secret
    reference readable, every function loadable; raises :class:`ConfigErrors` otherwise.
    ``to_run`` also needs each plug-in's libraries (a missing one names its extra at the
    ``type:`` / ``invoker:`` that uses it)."""
    if to_run:
        with plugins_to_run():
            config = load_config(path, resolve=True)
    else:
        config = load_config(path, resolve=True)
    errors = check_functions(config)
    if errors:
        raise ConfigErrors(errors)
    return config
