"""On-failure / on-success destinations: the string forms AWS uses, and typed blocks.

A destination is written either as ``{destination: <string>}`` (``Destination`` in AWS
spelling), where the string says both the type and the target, or as ``{type: <type>,
...settings}``. The string forms:

=================================  ==============  ==========================================
string                             type            settings given to the destination
=================================  ==============  ==========================================
``table``                          ``table``       none
``arn:aws:sqs:REGION:ACCOUNT:Q``   ``sqs``         ``arn``
``arn:aws:sns:REGION:ACCOUNT:T``   ``sns``         ``arn``
``arn:aws:s3:::BUCKET``            ``s3``          ``arn``
``arn:aws:kinesis:R:A:stream/S``   ``kinesis``     ``arn``
``http://...``, ``https://...``    ``http``        ``url``
``file:///PATH``, ``directory:P``  ``directory``   ``path``
``kafka://HOST:PORT/TOPIC``        ``kafka``       ``bootstrap_servers``, ``topic``
``kafka://TOPIC``                  ``kafka``       ``topic`` (the source's own cluster, as AWS)
=================================  ==============  ==========================================

A destination class with a ``from_target(target)`` (or ``from_target(target, source_settings)``)
classmethod parses the string itself; the table gives the settings used otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from router.config.plugins import load_plugin, validate_settings
from router.config.schema import Locate
from router.config.yaml_lines import KeyPath
from router.errors import ConfigError
from router.models import DestinationSpec, PluginSettings

DESTINATION_KEYS = ("destination", "Destination")


def parse_target(target: str) -> tuple[str, dict[str, Any]]:
    """``(type, settings)`` for a destination string; raises ValueError saying what is wrong."""
    target = target.strip()
    if target == "table":
        return "table", {}
    if target.startswith("arn:"):
        parts = target.split(":", 5)
        if len(parts) < 6 or not parts[2]:
            raise ValueError(
                f"malformed ARN {target!r}; expected arn:aws:SERVICE:REGION:ACCOUNT:NAME"
            )
        service = parts[2]
        if service in {"sqs", "sns", "s3", "kinesis"}:
            return service, {"arn": target}
        raise ValueError(
            f"ARNs of service {service!r} are not supported as destinations; "
            "use an sqs, sns, s3 or kinesis ARN"
        )
    if target.startswith("directory:") and not target.startswith("directory://"):
        path = target.removeprefix("directory:")
        if not path:
            raise ValueError("directory: needs a path, e.g. directory:/var/lib/router/failed")
        return "directory", {"path": path}
    parts_url = urlsplit(target)
    scheme = parts_url.scheme.lower()
    if scheme in {"http", "https"}:
        if not parts_url.netloc:
            raise ValueError("an http destination needs a host, e.g. https://example.com/hook")
        return "http", {"url": target}
    if scheme == "file":
        if parts_url.netloc not in {"", "localhost"} or not parts_url.path:
            raise ValueError("a file destination is file:///ABSOLUTE/PATH")
        return "directory", {"path": unquote(parts_url.path)}
    if scheme == "kafka":
        topic = parts_url.path.lstrip("/")
        if topic:
            return "kafka", {"bootstrap_servers": parts_url.netloc, "topic": unquote(topic)}
        if parts_url.netloc:
            return "kafka", {"topic": unquote(parts_url.netloc)}
        raise ValueError("a kafka destination is kafka://TOPIC or kafka://HOST:PORT/TOPIC")
    raise ValueError(
        f"unknown destination {target!r}; use table, an sqs/sns/s3 ARN, an http(s):// URL, "
        "file:///PATH or kafka://TOPIC"
    )


def _from_target(
    from_target: Callable[..., Any],
    target: str,
    source: PluginSettings | None,
    path: KeyPath,
    locate: Locate,
    errors: list[ConfigError],
) -> PluginSettings | None:
    """A destination's own ``from_target(target[, source_settings])`` parser (Kafka's
    ``kafka://TOPIC`` takes the servers of the mapping's Kafka source)."""
    try:
        takes_source = len(inspect.signature(from_target).parameters) >= 2
        result = from_target(target, source) if takes_source else from_target(target)
    except ValidationError as e:
        for item in e.errors():
            where = ".".join(str(p) for p in item["loc"])
            if item["type"] == "value_error" and "error" in (item.get("ctx") or {}):
                message = str(item["ctx"]["error"])
            else:
                message = item["msg"][:1].lower() + item["msg"][1:]
            errors.append(
                ConfigError(f"{where}: {message}" if where else message, locate(path, False))
            )
        return None
    except (ValueError, TypeError) as e:
        errors.append(ConfigError(str(e), locate(path, False)))
        return None
    if not isinstance(result, PluginSettings):
        errors.append(
            ConfigError("the destination did not accept this target", locate(path, False))
        )
        return None
    return result


SAM_DESTINATION_TYPES = {"SQS": "sqs", "SNS": "sns", "S3": "s3", "Kafka": "kafka"}
"""SAM's ``DestinationConfig.OnFailure.Type`` (required by SAM beside ``Destination``) and
the service of the ARN it goes with."""


def _sam_type_agrees(
    raw: Mapping[str, Any], key: str, path: KeyPath, locate: Locate, errors: list[ConfigError]
) -> bool:
    """SAM's ``Type`` beside ``Destination`` is accepted when it names the ARN's service."""
    kind = raw["Type"]
    where = locate((*path, "Type"), False)
    if kind not in SAM_DESTINATION_TYPES:
        errors.append(
            ConfigError(
                f"must be one of {', '.join(SAM_DESTINATION_TYPES)} (SAM's destination type), "
                f"or write type: <destination type> without {key}",
                where,
            )
        )
        return False
    target = raw[key]
    service = (
        target.split(":", 3)[2] if isinstance(target, str) and target.startswith("arn:") else ""
    )
    if service and service != SAM_DESTINATION_TYPES[kind]:
        errors.append(ConfigError(f"Type {kind} does not match the {service} ARN of {key}", where))
        return False
    return True


def build_destination(
    raw: Mapping[str, Any],
    path: KeyPath,
    locate: Locate,
    errors: list[ConfigError],
    source: PluginSettings | None = None,
) -> DestinationSpec | None:
    """Validate one ``on_failure`` / ``on_success`` block at ``path``. ``source`` is the
    mapping's validated source settings (for targets relative to the source's cluster)."""
    given = [k for k in DESTINATION_KEYS if k in raw]
    if given:
        key = given[0]
        if "Type" in raw and not _sam_type_agrees(raw, key, path, locate, errors):
            return None
        others = [k for k in raw if k not in (key, "Type")]
        if others:
            errors.append(
                ConfigError(
                    f"{others[0]!r} cannot be combined with {key!r}; write either "
                    f"{key}: <target> or type: <type> with its settings",
                    locate((*path, str(others[0])), False),
                )
            )
            return None
        target = raw[key]
        if not isinstance(target, str):
            errors.append(ConfigError("must be a string", locate((*path, key), False)))
            return None
        try:
            type_name, settings = parse_target(target)
        except ValueError as e:
            errors.append(ConfigError(str(e), locate((*path, key), False)))
            return None
        cls = load_plugin("destination", type_name, (*path, key), locate, errors)
        if cls is None:
            return None
        # Settings derived from the string: any complaint belongs to the string's line.
        from_target = getattr(cls, "from_target", None)
        if callable(from_target):
            validated = _from_target(from_target, target, source, (*path, key), locate, errors)
        else:
            validated = validate_settings(cls, settings, (*path, key), locate, errors, flat=True)
        if validated is None:
            return None
        return DestinationSpec(type=type_name, settings=validated, target=target)
    if "type" not in raw:
        errors.append(
            ConfigError(
                "needs destination: <target> (table, an ARN, a URL) or type: <destination type>",
                locate((*path, "destination"), True),
            )
        )
        return None
    type_name = raw["type"]
    if not isinstance(type_name, str):
        errors.append(ConfigError("must be a string", locate((*path, "type"), False)))
        return None
    cls = load_plugin("destination", type_name, (*path, "type"), locate, errors)
    if cls is None:
        return None
    settings = {k: v for k, v in raw.items() if k != "type"}
    validated = validate_settings(cls, settings, path, locate, errors)
    if validated is None:
        return None
    return DestinationSpec(type=type_name, settings=validated, target="")


def destination_to_raw(spec: DestinationSpec) -> dict[str, Any]:
    """The stored form of a destination: the string if one was given, else the typed block."""
    if spec.target:
        return {"destination": spec.target}
    return {"type": spec.type, **spec.settings.model_dump(mode="json", by_alias=True)}
