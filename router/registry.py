"""Maps the YAML ``type:`` of sources, invokers and destinations to lazily imported classes.

A connector whose library is missing fails with an install hint naming the extra: its package
calls :func:`require` first thing.
"""

from __future__ import annotations

import importlib
from typing import Any

from router.errors import ConfigError, MissingDependencyError

SOURCES: dict[str, str] = {
    "directory": "connectors.directory:DirectorySource",
    "schedule": "connectors.schedule.source:ScheduleSource",
    "kafka": "connectors.kafka.source:KafkaSource",
    "sqs": "connectors.aws.sqs:SQSSource",
    "s3": "connectors.aws.s3:S3Source",
}

INVOKERS: dict[str, str] = {
    "python": "router.invokers.python:PythonInvoker",
    "http": "router.invokers.http:HttpInvoker",
    "runtime-api": "router.invokers.runtime_api:RuntimeApiInvoker",
    "lambda": "connectors.aws.lambda_invoker:LambdaInvoker",
}

DESTINATIONS: dict[str, str] = {
    "directory": "router.destinations.directory:DirectoryDestination",
    "table": "router.destinations.table:TableDestination",
    "http": "router.destinations.http:HttpDestination",
    "sqs": "connectors.aws.destinations:SQSDestination",
    "sns": "connectors.aws.destinations:SNSDestination",
    "s3": "connectors.aws.destinations:S3Destination",
    "kafka": "connectors.kafka.destination:KafkaDestination",
}

# The pip extra that brings each optional library.
EXTRAS: dict[str, str] = {
    "aioboto3": "aws",
    "aiobotocore": "aws",
    "botocore": "aws",
    "asyncpg": "postgres",
}


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


def load(kind: str, table: dict[str, str], type_name: str) -> Any:
    """Import the class registered for ``type_name``; ``kind`` names the table in errors."""
    try:
        target = table[type_name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ConfigError(f"unknown {kind} type {type_name!r}; known types: {known}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingDependencyError as e:
        if not e.library:
            raise
        raise MissingDependencyError(
            f"the {kind} type {type_name!r} needs the {e.library!r} library: "
            f"pip install 'event-router[{e.extra}]'",
            library=e.library,
            extra=e.extra,
        ) from e
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        extra = EXTRAS.get(missing)
        if extra is None:
            raise
        raise MissingDependencyError(
            f"the {kind} type {type_name!r} needs the {missing!r} library: "
            f"pip install 'event-router[{extra}]'"
        ) from e
    return getattr(module, attr)


def load_source(type_name: str) -> Any:
    return load("source", SOURCES, type_name)


def load_invoker(type_name: str) -> Any:
    return load("invoker", INVOKERS, type_name)


def load_destination(type_name: str) -> Any:
    return load("destination", DESTINATIONS, type_name)
