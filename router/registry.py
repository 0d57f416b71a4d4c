"""Finds the class behind the YAML ``type:`` of a source, an invoker or a destination.

Every plug-in, the built-in ones included, is a Python entry point of the distribution that
ships it, in the group of its kind; the entry point's name is the ``type:`` used in YAML::

    [project.entry-points."router.sources"]
    kafka = "connectors.kafka.source:KafkaSource"

A third-party package registers its own connectors the same way and needs no change here.
A class is imported only when a configuration names its type.

A plug-in's class, its settings and its traits import without the client library it runs
on, so that ``router schema`` and ``router validate`` describe and check every plug-in on an
installation without its extra; the class names that library in ``requires``
(``{"aiokafka": "kafka"}``: library and pip extra) and imports it where it runs.
:func:`load` with ``to_run`` (what ``router run`` does) checks ``requires`` and names the
extra to install. A third-party package may instead call :func:`require` first thing in
its ``__init__``; then even validating needs the library.
"""

from __future__ import annotations

import functools
import importlib
import sys
from importlib.metadata import entry_points
from typing import Any, Final

from router.errors import ConfigError, MissingDependencyError
from router.filters.view import View

GROUPS: Final = {
    "source": "router.sources",
    "invoker": "router.invokers",
    "destination": "router.destinations",
    "filter_view": "router.filter_views",
}
"""The entry-point group of each kind of plug-in. ``router.filter_views`` names the filter
views of AWS event sources that have no source here (yet), for ``router test-pattern``."""


def plugins(kind: str) -> dict[str, str]:
    """Every installed plug-in of ``kind`` (``source``, ``invoker``, ``destination``):
    its type name and the ``module:attribute`` of its class."""
    return dict(_installed(GROUPS[kind], tuple(sys.path)))


@functools.lru_cache(maxsize=16)
def _installed(group: str, path: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # ``path`` only keys the cache: a distribution added to sys.path is seen at once.
    found: dict[str, str] = {}
    owners: dict[str, str] = {}
    for entry in entry_points(group=group):
        owner = entry.dist.name if entry.dist is not None else "?"
        if entry.name in found and found[entry.name] != entry.value:
            raise ConfigError(
                f"the {group} entry point {entry.name!r} is registered twice: "
                f"{found[entry.name]} (by {owners[entry.name]}) and {entry.value} (by {owner}); "
                "uninstall one of the two distributions"
            )
        found[entry.name] = entry.value
        owners[entry.name] = owner
    return tuple(sorted(found.items()))


def require(library: str, *, extra: str) -> None:
    """Import ``library`` or raise :class:`MissingDependencyError` naming the pip ``extra``
    that installs it. A connector package calls this in its ``__init__``, so that every
    module of the package can import the library plainly."""
    try:
        importlib.import_module(library)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != library.split(".")[0]:
            raise  # the library is there, one of its own imports failed
        raise MissingDependencyError(
            f"the {library!r} library is missing: pip install 'event-router[{extra}]'",
            library=library,
            extra=extra,
        ) from e


def load(kind: str, type_name: str, *, to_run: bool = False) -> Any:
    """Import the class registered for ``type_name`` as a plug-in of ``kind``; ``to_run``
    also imports the libraries it ``requires``, raising :class:`MissingDependencyError`
    naming the extra of the first one missing."""
    table = plugins(kind)
    try:
        target = table[type_name]
    except KeyError:
        if not table:
            # Not even the built-in ones: the router runs from a source tree whose
            # distribution metadata (where entry points live) is missing or older.
            raise ConfigError(
                f"unknown {kind} type {type_name!r}: no {kind} types are installed; "
                "install the router (pip install -e . in a checkout) to register them"
            ) from None
        known = ", ".join(sorted(table))
        raise ConfigError(f"unknown {kind} type {type_name!r}; known types: {known}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingDependencyError as e:
        if not e.library:
            raise
        raise _needs(kind, type_name, e) from e
    cls = getattr(module, attr)
    if to_run:
        for library, extra in getattr(cls, "requires", {}).items():
            try:
                require(library, extra=extra)
            except MissingDependencyError as e:
                raise _needs(kind, type_name, e) from e
    return cls


def _needs(kind: str, type_name: str, e: MissingDependencyError) -> MissingDependencyError:
    return MissingDependencyError(
        f"the {kind} type {type_name!r} needs the {e.library!r} library: "
        f"pip install 'event-router[{e.extra}]'",
        library=e.library,
        extra=e.extra,
    )


def filter_view(source_type: str) -> View:
    """What filter patterns see of a record of ``source_type``: the view its source class
    declares (``traits.filter_view``), else the one registered for that name under
    ``router.filter_views``. Raises ValueError for a type with neither, and
    :class:`MissingDependencyError` for a source whose module needs a missing library to
    import (the built-in ones import without theirs)."""
    if source_type in plugins("source"):
        view: View = load("source", source_type).traits.filter_view
        return view
    if source_type in plugins("filter_view"):
        named: View = load("filter_view", source_type)
        return named
    raise ValueError(f"unknown source type {source_type!r}; known types: {', '.join(viewed())}")


def viewed() -> list[str]:
    """The source types :func:`filter_view` knows."""
    return sorted(plugins("source").keys() | plugins("filter_view").keys())


def load_source(type_name: str) -> Any:
    """The source class of ``type_name``, to run (its libraries imported)."""
    return load("source", type_name, to_run=True)


def load_invoker(type_name: str) -> Any:
    """The invoker class of ``type_name``, to run (its libraries imported)."""
    return load("invoker", type_name, to_run=True)


def load_destination(type_name: str) -> Any:
    """The destination class of ``type_name``, to run (its libraries imported)."""
    return load("destination", type_name, to_run=True)
