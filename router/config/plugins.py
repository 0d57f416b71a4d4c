"""Loading plug-in classes and validating their settings, with errors at the right key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import ValidationError

from router import registry
from router.config.schema import Locate, translate
from router.config.yaml_lines import KeyPath, format_path
from router.errors import ConfigError, Location, MissingDependencyError
from router.models import PluginSettings

_TO_RUN: ContextVar[bool] = ContextVar("plugins_to_run", default=False)


@contextmanager
def plugins_to_run() -> Iterator[None]:
    """Plug-ins loaded inside also need the libraries they run on (``router run``);
    outside, a plug-in is checked without them (``router validate``, ``router schema``)."""
    token = _TO_RUN.set(True)
    try:
        yield
    finally:
        _TO_RUN.reset(token)


def load_plugin(
    kind: str, type_name: str, path: KeyPath, locate: Locate, errors: list[ConfigError]
) -> Any | None:
    """The class registered for ``type_name``, or None after adding an error at ``path``."""
    try:
        return registry.load(kind, type_name, to_run=_TO_RUN.get())
    except MissingDependencyError as e:
        errors.append(ConfigError(str(e), locate(path, False)))
    except ConfigError as e:
        errors.append(ConfigError(e.message, locate(path, False)))
    except ImportError as e:
        errors.append(
            ConfigError(
                f"the {kind} type {type_name!r} is not available in this build ({e})",
                locate(path, False),
            )
        )
    return None


def settings_class(cls: Any) -> type[PluginSettings]:
    settings = getattr(cls, "Settings", None)
    return settings if isinstance(settings, type) else PluginSettings


def validate_settings(
    cls: Any,
    raw: dict[str, Any],
    path: KeyPath,
    locate: Locate,
    errors: list[ConfigError],
    *,
    flat: bool = False,
    also_known: tuple[str, ...] = (),
) -> PluginSettings | None:
    """Validate ``raw`` with the plug-in's ``Settings``; errors go under ``path``.

    ``flat`` puts every error on ``path`` itself (settings derived from one string).
    """
    model = settings_class(cls)
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        if flat:
            for err in translate(e, model, raw, (), lambda p, _e: Location(path=format_path(p))):
                sub = err.location.path
                message = f"{sub}: {err.message}" if sub else err.message
                errors.append(ConfigError(message, locate(path, False)))
        else:
            errors.extend(translate(e, model, raw, path, locate, also_known))
    except (ValueError, TypeError) as e:
        # A settings model's own validator may raise outside pydantic's wrapping.
        errors.append(ConfigError(str(e), locate(path, False)))
    return None
