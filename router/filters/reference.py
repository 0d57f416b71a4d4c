"""A straightforward evaluator of the pattern language, for tests and benchmarks.

It follows the formal definition literally instead of the compiled engine's structural walk:

1. Flatten the event into fields ``(dotted path, leaf value, array membership)``, where the
   membership records, for every array the leaf sits in, the index of the element it is in.
2. A conjunction matches when one leaf can be picked for every positive field (satisfying one
   of its value tests) so that all picked leaves are *array consistent* (two leaves inside the
   same array are in the same element; event-ruler's ``rulesForJSONEvent``), and every
   ``exists: false`` field has no leaf consistent with the picked ones.

It is slow (backtracking over all leaves) and never used on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from router.filters.parse import load_pattern, parse_pattern
from router.filters.spec import ABSENT, Conjunction, Path, RawText, leaf_matches

Membership = dict[int, int]


class _Flattener:
    def __init__(self) -> None:
        self.fields: list[tuple[Path, Any, Membership]] = []
        self.raw_paths: list[Path] = []
        self._next_array = 0

    def walk(self, value: Any, path: Path, membership: Membership) -> None:
        if isinstance(value, Mapping):
            for key, child in value.items():
                self.walk(child, (*path, *str(key).split(".")), membership)
        elif isinstance(value, list):
            array_id = self._next_array
            self._next_array += 1
            for index, element in enumerate(value):
                self.walk(element, path, {**membership, array_id: index})
        else:
            if type(value) is RawText:
                self.raw_paths.append(path)
            self.fields.append((path, value, membership))


def _consistent(a: Membership, b: Membership) -> bool:
    return all(b.get(array, index) == index for array, index in a.items())


def _merge(a: Membership, b: Membership) -> Membership:
    return {**a, **b}


def _assignments(
    positives: list[tuple[Path, Any]],
    fields: list[tuple[Path, Any, Membership]],
    membership: Membership,
) -> Iterator[Membership]:
    if not positives:
        yield membership
        return
    (path, tests), rest = positives[0], positives[1:]
    for field_path, value, field_membership in fields:
        if field_path != path or not _consistent(membership, field_membership):
            continue
        if any(leaf_matches(test, value) for test in tests):
            yield from _assignments(rest, fields, _merge(membership, field_membership))


def _flatten(event: Any) -> _Flattener:
    flat = _Flattener()
    flat.walk(event, (), {})
    return flat


def _matches_flat(conj: Conjunction, flat: _Flattener) -> bool:
    for raw in flat.raw_paths:
        # A pattern that looks inside a non-JSON payload never matches (see RawText).
        if any(len(p) > len(raw) and p[: len(raw)] == raw for p in conj):
            return False
    positives = [(p, c) for p, c in conj.items() if c is not ABSENT]
    absents = [p for p, c in conj.items() if c is ABSENT]
    for membership in _assignments(positives, flat.fields, {}):
        if not any(
            field_path == path and _consistent(membership, field_membership)
            for path in absents
            for field_path, _, field_membership in flat.fields
        ):
            return True
    return False


def conjunction_matches(conj: Conjunction, event: Any) -> bool:
    """Whether one conjunction (one ``$or`` branch of a pattern) matches a decoded event."""
    return _matches_flat(conj, _flatten(event))


def pattern_matches(pattern: str | Mapping[str, Any], event: Any) -> bool:
    """Whether one pattern (JSON text or mapping) matches a decoded event."""
    return any(conjunction_matches(c, event) for c in parse_pattern(load_pattern(pattern)))


def patterns_match(patterns: Sequence[str | Mapping[str, Any]], event: Any) -> bool:
    """Whether any of the patterns matches; an empty list matches everything."""
    if not patterns:
        return True
    return any(pattern_matches(p, event) for p in patterns)


def compile_reference(patterns: Sequence[str | Mapping[str, Any]]) -> Callable[[Any], bool]:
    """``patterns_match`` with the patterns parsed once: for checking many events.

    Each event is flattened once; only the fields a conjunction names are searched.
    """
    if not patterns:
        return lambda event: True
    conjunctions = [c for p in patterns for c in parse_pattern(load_pattern(p))]

    def matches(event: Any) -> bool:
        flat = _flatten(event)
        by_path: dict[Path, list[tuple[Path, Any, Membership]]] = {}
        for item in flat.fields:
            by_path.setdefault(item[0], []).append(item)
        for conj in conjunctions:
            narrowed = _Flattener()
            narrowed.raw_paths = flat.raw_paths
            narrowed.fields = [f for path in conj for f in by_path.get(path, ())]
            if _matches_flat(conj, narrowed):
                return True
        return False

    return matches
