"""Loading a configuration file, or a directory of them, into a :class:`RouterConfig`."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.config.convert import (
    ConsoleSettings,
    IngressSettings,
    RouterSettings,
    build_function,
    build_mapping,
)
from router.config.schema import RouterSettingsModel, validate_model
from router.config.yaml_lines import KeyPath, YamlDocument, format_path, load_yaml
from router.errors import ConfigError, ConfigErrors, Location
from router.models import FunctionConfig, MappingConfig, account_scope
from router.secrets import secret_policy

TOP_LEVEL_KEYS = ("router", "functions", "mappings")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterConfig:
    """A whole validated configuration: functions, mappings and router settings."""

    functions: Mapping[str, FunctionConfig]
    mappings: tuple[MappingConfig, ...]
    settings: RouterSettings = field(default_factory=RouterSettings)
    files: tuple[str, ...] = ()
    """The files read, for the watcher."""
    locations: Mapping[str, Location] = field(default_factory=dict)
    """Where each mapping's ``name`` is written, by mapping name (for later errors)."""
    function_files: Mapping[str, str] = field(default_factory=dict)
    """The file that declares each function, by function name."""
    key_lines: Mapping[str, Mapping[KeyPath, int]] = field(default_factory=dict)
    """The line of every key, by file (see :class:`YamlDocument`)."""

    def running(self) -> RouterConfig:
        """What a running router keeps: its functions and settings, without the mappings
        (once applied they are in the store; 10,000 of them are ~70 MB), nor the lines of
        their keys."""
        lines = {
            file: {path: line for path, line in keys.items() if path[:1] != ("mappings",)}
            for file, keys in self.key_lines.items()
        }
        return dataclasses.replace(self, mappings=(), locations={}, key_lines=lines)

    def locate(self, file: str | None, path: KeyPath) -> Location:
        """``FILE:LINE: key.path`` of ``path`` in ``file`` (the line of its nearest key)."""
        if file is None:
            return Location(path=format_path(path))
        doc = YamlDocument(data=None, filename=file, lines=self.key_lines.get(file, {}))
        return doc.location(path)

    def locate_function(self, name: str, path: KeyPath = ()) -> Location:
        """Where ``functions.NAME.<path>`` is written."""
        return self.locate(self.function_files.get(name), ("functions", name, *path))

    def relocate(self, error: ConfigError) -> ConfigError:
        """``error`` with the file and line added when it names a function's key
        (``functions.NAME.key``) but no file (invokers raise such errors at start)."""
        where = error.location
        parts = where.path.split(".")
        if where.file is not None or len(parts) < 2 or parts[0] != "functions":
            return error
        if parts[1] not in self.function_files:
            return error
        return ConfigError(error.message, self.locate_function(parts[1], tuple(parts[2:])))


def _locator(doc: YamlDocument) -> Any:
    def locate(path: KeyPath, enclosing: bool) -> Location:
        line_path = path[:-1] if enclosing and path else path
        return Location(file=doc.filename, line=doc.line(line_path), path=_fmt(path))

    return locate


def _fmt(path: KeyPath) -> str:
    return format_path(path)


def _top_level(doc: YamlDocument, errors: list[ConfigError]) -> dict[str, Any]:
    data = doc.data
    if data is None:
        # A file truncated while it is rewritten, or a volume mounted empty, must not delete
        # every mapping; removing them all takes an explicit ``mappings: []``.
        errors.append(
            ConfigError(
                "the file is empty (or holds only comments); nothing is applied. Declare "
                "router:, functions: or mappings: (write mappings: [] to remove every mapping)",
                Location(file=doc.filename, line=None),
            )
        )
        return {}
    if not isinstance(data, dict):
        errors.append(
            ConfigError(
                "the file must be a mapping with router:, functions: and mappings:",
                Location(file=doc.filename, line=doc.line(())),
            )
        )
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"known keys: {', '.join(TOP_LEVEL_KEYS)}"
            )
            errors.append(ConfigError(f"unknown key {key!r}; {hint}", doc.location((str(key),))))
            continue
        out[key] = value
    return out


def _build(
    docs: Sequence[YamlDocument], errors: list[ConfigError], *, resolve: bool
) -> RouterConfig:
    """Validate the documents; secrets under the policy the ``router:`` block asks for, and
    resolved when ``resolve`` (to run)."""
    tops = [(doc, _top_level(doc, errors)) for doc in docs]
    allow = any(
        isinstance(top.get("router"), dict) and top["router"].get("allow_plaintext_secrets") is True
        for _doc, top in tops
    )
    with secret_policy(allow_plaintext=allow, resolve=resolve):
        return _build_checked(docs, tops, errors)


def _build_checked(
    docs: Sequence[YamlDocument],
    tops: list[tuple[YamlDocument, dict[str, Any]]],
    errors: list[ConfigError],
) -> RouterConfig:

    # router: settings, merged key by key across files.
    merged: dict[str, Any] = {}
    seen_at: dict[str, Location] = {}
    seen_in: dict[str, YamlDocument] = {}
    router_ok = True
    for doc, top in tops:
        block = top.get("router")
        if block is None:
            continue
        if not isinstance(block, dict):
            errors.append(ConfigError("must be a mapping", doc.location(("router",))))
            router_ok = False
            continue
        for key, value in block.items():
            where = doc.location(("router", str(key)))
            if key in merged:
                errors.append(ConfigError(f"also set at {seen_at[key]}; set it once", where))
                router_ok = False
                continue
            merged[key] = value
            seen_at[key] = where
            seen_in[key] = doc
    settings = RouterSettings()
    if merged and router_ok:
        # Locate errors in the file that set the key.
        def locate_router(path: KeyPath, enclosing: bool) -> Location:
            key = str(path[1]) if len(path) > 1 else ""
            doc = seen_in.get(key)
            if doc is None:
                return Location(path=_fmt(path))
            # The line of the nearest key written (a nested key of router.ingress has its own).
            line_path = path[:-1] if enclosing and path else path
            return Location(file=doc.filename, line=doc.line(line_path), path=_fmt(path))

        model = validate_model(RouterSettingsModel, merged, ("router",), locate_router, errors)
        if model is not None:
            values = model.model_dump()
            values["console"] = ConsoleSettings(**values["console"])
            values["ingress"] = (
                None if model.ingress is None else IngressSettings.from_model(model.ingress)
            )
            settings = RouterSettings(**values)
    with account_scope(settings.account_id):
        return _build_declared(docs, tops, errors, settings)


def _build_declared(
    docs: Sequence[YamlDocument],
    tops: list[tuple[YamlDocument, dict[str, Any]]],
    errors: list[ConfigError],
    settings: RouterSettings,
) -> RouterConfig:
    """The functions and mappings, with ``router:`` settings read."""
    functions: dict[str, FunctionConfig] = {}
    function_at: dict[str, Location] = {}
    function_files: dict[str, str] = {}
    declared: set[str] = set()
    for doc, top in tops:
        block = top.get("functions")
        if block is None:
            continue
        if not isinstance(block, dict):
            errors.append(
                ConfigError("must be a mapping of function names", doc.location(("functions",)))
            )
            continue
        locate = _locator(doc)
        for name, raw in block.items():
            path: KeyPath = ("functions", str(name))
            if name in function_at:
                errors.append(
                    ConfigError(
                        f"duplicate function {name!r} (first declared at {function_at[name]})",
                        doc.location(path),
                    )
                )
                continue
            function_at[name] = Location(file=doc.filename, line=doc.line(path))
            function_files[str(name)] = doc.filename
            declared.add(str(name))
            function = build_function(name, raw, path, locate, errors)
            if function is not None:
                functions[function.name] = function

    # A function that failed validation still exists: do not also call it unknown.
    mappings: list[MappingConfig] = []
    mapping_at: dict[str, Location] = {}
    for doc, top in tops:
        block = top.get("mappings")
        if block is None:
            continue
        if not isinstance(block, list):
            errors.append(ConfigError("must be a list of mappings", doc.location(("mappings",))))
            continue
        locate = _locator(doc)
        for i, raw in enumerate(block):
            prefix: KeyPath = ("mappings", i)
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str):
                here = Location(
                    file=doc.filename,
                    line=doc.line((*prefix, "name")),
                    path=_fmt((*prefix, "name")),
                )
                if name in mapping_at:
                    first = mapping_at[name]
                    errors.append(
                        ConfigError(
                            f"duplicate mapping name {name!r} (first used at "
                            f"{first.file}:{first.line}); names must be unique",
                            here,
                        )
                    )
                    continue
                mapping_at[name] = here
            mapping = build_mapping(
                raw, prefix, locate, errors, functions=declared, settings=settings
            )
            if mapping is not None:
                mappings.append(mapping)

    return RouterConfig(
        functions=functions,
        mappings=tuple(mappings),
        settings=settings,
        files=tuple(doc.filename for doc in docs),
        locations=mapping_at,
        function_files=function_files,
        key_lines={doc.filename: doc.lines for doc in docs},
    )


def load_config_text(
    text: str, filename: str = "<string>", *, resolve: bool = False
) -> RouterConfig:
    """Validate one YAML text; raises :class:`ConfigErrors` listing every problem found.
    ``resolve`` also resolves every secret reference (see :func:`load_config`)."""
    errors: list[ConfigError] = []
    try:
        doc = load_yaml(text, filename)
    except ConfigErrors as e:
        raise ConfigErrors(e.errors) from None
    config = _build([doc], errors, resolve=resolve)
    if errors:
        raise ConfigErrors(_sorted(errors, [filename]))
    return config


def _sorted(errors: list[ConfigError], files: Sequence[str]) -> list[ConfigError]:
    """Errors by file (in reading order), then line; stable for errors without a line."""
    order = {f: i for i, f in enumerate(files)}

    def key(e: ConfigError) -> tuple[int, int]:
        return order.get(e.location.file or "", len(order)), e.location.line or 0

    return sorted(errors, key=key)


def config_files(path: str | Path) -> list[Path]:
    """The files ``load_config(path)`` reads: the file, or the directory's ``*.yaml`` and
    ``*.yml`` files (not recursive, hidden files skipped) in name order."""
    p = Path(path)
    if p.is_dir():
        return sorted(
            f
            for f in p.iterdir()
            if f.is_file() and f.suffix in {".yaml", ".yml"} and not f.name.startswith(".")
        )
    return [p]


def load_config(path: str | Path, *, resolve: bool = False) -> RouterConfig:
    """Load a YAML file or a directory of YAML files (merged; names must be unique across
    files). Raises :class:`ConfigErrors` listing every problem of every file.

    ``resolve`` reads every secret reference (environment variables, files) as ``router
    run`` needs them, and reports one that cannot be read at its key; without it only their
    form is checked (``router apply`` stores references, never values)."""
    p = Path(path)
    if not p.exists():
        raise ConfigErrors([ConfigError("no such file or directory", Location(file=str(path)))])
    files = config_files(p)
    if not files:
        raise ConfigErrors(
            [ConfigError("no *.yaml or *.yml files in this directory", Location(file=str(path)))]
        )
    errors: list[ConfigError] = []
    docs: list[YamlDocument] = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            errors.append(ConfigError(f"cannot read: {e}", Location(file=str(f))))
            continue
        try:
            docs.append(load_yaml(text, str(f)))
        except ConfigErrors as e:
            errors.extend(e.errors)
    config = _build(docs, errors, resolve=resolve)
    if errors:
        raise ConfigErrors(_sorted(errors, [str(f) for f in files]))
    return dataclasses.replace(config, files=tuple(str(f) for f in files))
