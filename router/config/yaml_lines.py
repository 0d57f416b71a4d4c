"""YAML loading that remembers where every key is.

PyYAML's composer gives a node tree with start marks; we build plain Python values from it
ourselves so that we can record, for every key path, the line it was written on, and reject
duplicate keys in a mapping (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from router.errors import ConfigError, Location

KeyPath = tuple[str | int, ...]
"""A path into a YAML document: mapping keys and sequence indexes."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def format_path(path: KeyPath) -> str:
    """``("mappings", 0, "source", "topics")`` -> ``mappings[0].source.topics``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed YAML file and the line of every key in it."""

    data: Any
    filename: str
    lines: Mapping[KeyPath, int]
    """1-based line of each mapping key (or of each sequence item) by its path."""

    def line(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def location(self, path: KeyPath) -> Location:
        return Location(file=self.filename, line=self.line(path), path=format_path(path))


class _Builder:
    """Builds Python values from a composed node tree, recording lines and duplicates."""

    def __init__(self, loader: yaml.SafeLoader, filename: str) -> None:
        self.loader = loader
        self.filename = filename
        self.lines: dict[KeyPath, int] = {}
        self.errors: list[ConfigError] = []
        self._active: set[int] = set()

    def error(self, message: str, path: KeyPath, line: int) -> None:
        self.errors.append(
            ConfigError(message, Location(file=self.filename, line=line, path=format_path(path)))
        )

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        if id(node) in self._active:
            self.error("recursive YAML alias", path, node.start_mark.line + 1)
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self.lines.setdefault((*path, i), child.start_mark.line + 1)
                    items.append(self.build(child, (*path, i)))
                return items
            return self.loader.construct_object(node, deep=True)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        own: dict[Any, int] = {}
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.append(value_node)
                continue
            line = key_node.start_mark.line + 1
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or isinstance(key, list | dict):
                self.error("a mapping key must be a plain value", path, line)
                continue
            if key in own:
                self.error(
                    f"duplicate key {key!r} (first given on line {own[key]})",
                    (*path, _path_key(key)),
                    line,
                )
                continue
            own[key] = line
            self.lines[(*path, _path_key(key))] = line
            result[key] = self.build(value_node, (*path, _path_key(key)))
        # "<<: *anchor" merge keys: the mapping's own keys win, as in YAML 1.1.
        for source in merged:
            sources = source.value if isinstance(source, yaml.SequenceNode) else [source]
            for src in sources:
                value = self.build(src, path)
                if not isinstance(value, dict):
                    self.error("a merge key (<<) needs a mapping", path, src.start_mark.line + 1)
                    continue
                for k, v in value.items():
                    result.setdefault(k, v)
        return result


def _path_key(key: Any) -> str | int:
    return key if isinstance(key, str) else str(key)


def _syntax_error(e: yaml.MarkedYAMLError, filename: str) -> ConfigError:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else None
    message = f"invalid YAML: {e.problem or e.context or 'syntax error'}"
    if e.problem and e.context and e.context_mark is not None:
        message += f" ({e.context} started on line {e.context_mark.line + 1})"
    return ConfigError(message, Location(file=filename, line=line))


_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", None)
"""libyaml's parser when PyYAML has it (~10 times faster: 10,000 mappings parse in well under
a second instead of seconds); errors are reported by the pure-Python one."""


def load_yaml(text: str, filename: str = "<string>") -> YamlDocument:
    """Parse one YAML document; raises :class:`ConfigErrors` for bad syntax or duplicate keys.

    An empty document gives ``None`` as data.
    """
    from router.errors import ConfigErrors

    if _FAST_LOADER is not None:
        try:
            return _load_yaml(_FAST_LOADER(text), filename)
        except ConfigErrors:
            pass  # parsed again below: the messages (and their lines) of the documented parser
    return _load_yaml(yaml.SafeLoader(text), filename)


def _load_yaml(loader: Any, filename: str) -> YamlDocument:
    from router.errors import ConfigErrors

    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            raise ConfigErrors([_syntax_error(e, filename)]) from None
        except yaml.YAMLError as e:
            raise ConfigErrors(
                [ConfigError(f"invalid YAML: {e}", Location(file=filename))]
            ) from None
        if node is None:
            return YamlDocument(data=None, filename=filename, lines={(): 1})
        builder = _Builder(loader, filename)
        builder.lines[()] = node.start_mark.line + 1
        try:
            data = builder.build(node, ())
        except yaml.MarkedYAMLError as e:
            builder.errors.append(_syntax_error(e, filename))
            data = None
        if builder.errors:
            raise ConfigErrors(builder.errors)
        return YamlDocument(data=data, filename=filename, lines=builder.lines)
    finally:
        loader.dispose()
