"""The anchor index: for a few patterns that all have a field that can be looked up by value.

Each conjunction is filed under one field ("anchor") and the values its test accepts there
(exact values, prefixes, suffixes, equals-ignore-case, a wildcard's literal head or tail,
numeric ranges); per event the anchor fields are walked once (all anchor paths together, as
a trie) and their leaf values looked up, yielding candidate conjunctions that are then fully
evaluated, and the first that matches ends the search.  The index only proposes
candidates: a superset is fine, a miss would be a bug.

For a small set of such patterns (a typical mapping: a handful of filters keyed on an event
type) this beats the shared walk of :mod:`router.filters.walk` when most records match, as
it stops at the first match instead of reading every field.  Sets with a conjunction that
has no anchor (only anything-but, exists or cidr tests) or with many conjunctions use the
walk, whose cost does not grow with the number of patterns.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from router.filters.spec import (
    MISSING,
    Cond,
    Conjunction,
    EqualsIgnoreCase,
    Exact,
    Numeric,
    Path,
    Prefix,
    RawText,
    Suffix,
    Wildcard,
    number_key,
    number_literal,
)
from router.filters.walk import dotted_view

Evaluator = Callable[[Any], bool]
# Largest set of conjunctions matched through anchors rather than by the shared walk.
MAX_ANCHORED: Final = 16


AnchorKey = tuple[str, Any]  # (kind, value) with kind in str/num/lit/bool/null/prefix/lower...


def anchor_keys(cond: Cond) -> list[AnchorKey] | None:
    """Lookup keys under which a leaf satisfying ``cond`` is sure to be found, if any."""
    if not isinstance(cond, tuple):
        return None
    keys: list[AnchorKey] = []
    for test in cond:
        if isinstance(test, Exact):
            v = test.value
            if type(v) is str:
                keys.append(("str", v))
            elif type(v) is bool:
                keys.append(("bool", v))
            elif v is None:
                keys.append(("null", None))
            else:
                key = number_key(v)
                keys.append(("num", key) if key is not None else ("lit", number_literal(v)))
        elif isinstance(test, Prefix):
            keys.append(("lprefix" if test.ignore_case else "prefix", test.text))
        elif isinstance(test, Suffix):
            keys.append(("lsuffix" if test.ignore_case else "suffix", test.text))
        elif isinstance(test, EqualsIgnoreCase):
            keys.append(("lower", test.text))
        elif isinstance(test, Wildcard) and (anchor := _wildcard_anchor(test.text)) is not None:
            keys.append(anchor)
        elif isinstance(test, Numeric):
            # Comparable keys are integers, so open bounds become inclusive ones.
            lo = _KEY_MIN if test.low is None else test.low + (0 if test.low_inclusive else 1)
            hi = _KEY_MAX if test.high is None else test.high - (0 if test.high_inclusive else 1)
            keys.append(("range", (lo, hi)))
        else:
            return None
    return keys


_KEY_MIN: Final = 0  # number_key(-5e9)
_KEY_MAX: Final = 10**16  # number_key(5e9)
# Beyond this many (segment, pattern) entries the range table is scanned instead.
_MAX_RANGE_ENTRIES: Final = 100_000


def _wildcard_anchor(text: str) -> AnchorKey | None:
    """A prefix (or suffix) every string matching the wildcard has: its literal head (tail)."""
    chars: list[tuple[str, bool]] = []  # (character, is_wildcard)
    i = 0
    while i < len(text):
        if text[i] == "\\":
            chars.append((text[i + 1], False))
            i += 2
        else:
            chars.append((text[i], text[i] == "*"))
            i += 1
    head = "".join(c for c, _ in itertools.takewhile(lambda x: not x[1], chars))
    if head:
        return ("str", head) if len(head) == len(chars) else ("prefix", head)
    tail = "".join(c for c, _ in itertools.takewhile(lambda x: not x[1], reversed(chars)))
    return ("suffix", tail[::-1]) if tail else None


@dataclass(slots=True)
class AnchorIndex:
    exact: dict[Any, list[int]] = field(default_factory=dict)  # str values
    numbers: dict[int, list[int]] = field(default_factory=dict)
    literals: dict[str, list[int]] = field(default_factory=dict)
    singletons: dict[Any, list[int]] = field(default_factory=dict)  # True/False/None by id
    prefixes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    lower: dict[str, list[int]] = field(default_factory=dict)
    lower_prefixes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    suffixes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    lower_suffixes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    # Numeric ranges: cut the key line at every bound; each segment lists the ranges covering
    # it, so a number finds its candidates with one bisect.
    ranges: list[tuple[int, int, int]] = field(default_factory=list)
    range_bounds: list[int] = field(default_factory=list)
    range_segments: list[list[int] | None] = field(default_factory=list)

    def finalize(self) -> None:
        if not self.ranges:
            return
        # Sweep over the bounds, keeping the set of ranges open at each point.
        opens: dict[int, list[int]] = {}
        closes: dict[int, list[int]] = {}
        for lo, hi, conj_id in self.ranges:
            opens.setdefault(lo, []).append(conj_id)
            closes.setdefault(hi + 1, []).append(conj_id)
        bounds = sorted(opens.keys() | closes.keys())
        active: dict[int, None] = {}
        segments: list[list[int] | None] = []
        entries = 0
        for point in bounds:
            for conj_id in closes.get(point, ()):
                active.pop(conj_id, None)
            for conj_id in opens.get(point, ()):
                active[conj_id] = None
            entries += len(active)
            if entries > _MAX_RANGE_ENTRIES:
                return  # too many overlaps: keep the plain list (scanned per value)
            segments.append(list(active) or None)
        self.range_bounds, self.range_segments = bounds, segments

    def range_hits(self, key: int) -> list[int] | None:
        if self.range_bounds:
            i = bisect_right(self.range_bounds, key) - 1
            return self.range_segments[i] if i >= 0 else None
        hits = [c for lo, hi, c in self.ranges if lo <= key <= hi]
        return hits or None

    def exact_only(self) -> dict[Any, list[int]] | None:
        """The exact-string table when string lookups need nothing else, else None."""
        if self.prefixes or self.lower or self.lower_prefixes:
            return None
        return None if self.suffixes or self.lower_suffixes else self.exact

    def add(self, key: AnchorKey, conj_id: int) -> None:
        kind, value = key
        if kind == "str":
            self.exact.setdefault(value, []).append(conj_id)
        elif kind == "num":
            self.numbers.setdefault(value, []).append(conj_id)
        elif kind == "lit":
            self.literals.setdefault(value, []).append(conj_id)
        elif kind in ("bool", "null"):
            # Keyed by identity-ish name: True == 1 in Python, so never mix with numbers.
            self.singletons.setdefault(repr(value), []).append(conj_id)
        elif kind == "prefix":
            self.prefixes.setdefault(len(value), {}).setdefault(value, []).append(conj_id)
        elif kind == "lower":
            self.lower.setdefault(value, []).append(conj_id)
        elif kind == "range":
            self.ranges.append((value[0], value[1], conj_id))
        else:
            table = {
                "lprefix": self.lower_prefixes,
                "suffix": self.suffixes,
                "lsuffix": self.lower_suffixes,
            }[kind]
            table.setdefault(len(value), {}).setdefault(value, []).append(conj_id)


_SINGLETON_NAMES: Final = {True: "True", False: "False"}


@dataclass(slots=True)
class _AnchorNode:
    index: AnchorIndex | None = None
    children: dict[str, _AnchorNode] = field(default_factory=dict)


def anchor_trie(by_path: dict[Path, AnchorIndex]) -> _AnchorNode:
    root = _AnchorNode()
    for path, index in by_path.items():
        node = root
        for key in path:
            node = node.children.setdefault(key, _AnchorNode())
        node.index = index
    return root


Walker = Callable[[Any, Any], bool]


def anchor_walker(node: _AnchorNode, evaluators: tuple[Evaluator, ...]) -> Walker:
    """Closure walking the event along all anchor paths at once (shared prefixes read once).

    At each anchor path every leaf value (arrays flattened, consistency ignored: this only
    proposes candidates) is looked up in the index; candidates are then fully evaluated.
    """
    # Children that are plain anchor leaves are looked up inline: one call less per field.
    inner = tuple(
        (key, anchor_walker(child, evaluators))
        for key, child in node.children.items()
        if child.children
    )
    leaves = tuple(
        (key, child.index, anchor_walker(child, evaluators), child.index.exact_only())
        for key, child in node.children.items()
        if not child.children and child.index is not None
    )
    index = node.index

    def candidates_match(ids: list[int], event: Any) -> bool:
        for conj_id in ids:  # noqa: SIM110
            if evaluators[conj_id](event):
                return True
        return False

    def walk(v: Any, event: Any) -> bool:
        t = type(v)
        if t is dict:
            dotted: bool | None = None  # whether this dict has dotted keys, checked lazily
            for key, leaf_index, leaf_walk, exact_table in leaves:
                cv = v.get(key, MISSING)
                if cv is MISSING:
                    if dotted is None:
                        dotted = "." in "".join(v)
                    if not dotted:
                        continue
                    cv = dotted_view(v, key)
                tcv = type(cv)
                if tcv is dict or tcv is list:
                    if leaf_walk(cv, event):
                        return True
                elif cv is not MISSING:
                    # Strings looked up straight in the exact table when that is all there is.
                    if tcv is str and exact_table is not None:
                        ids = exact_table.get(cv)
                    else:
                        ids = _lookup(leaf_index, cv)
                    if ids is not None:
                        for conj_id in ids:
                            if evaluators[conj_id](event):
                                return True
            for key, child in inner:
                cv = v.get(key, MISSING)
                if cv is MISSING:
                    if dotted is None:
                        dotted = "." in "".join(v)
                    if not dotted:
                        continue
                    cv = dotted_view(v, key)
                    if cv is MISSING:
                        continue
                if child(cv, event):
                    return True
            return False
        if t is list:
            for element in v:  # noqa: SIM110
                if walk(element, event):
                    return True
            return False
        if index is None or v is MISSING:
            return False
        ids = _lookup(index, v)
        return ids is not None and candidates_match(ids, event)

    return walk


def _lookup(index: AnchorIndex, value: Any) -> list[int] | None:
    """Candidate conjunction ids for one leaf value (None when there are none)."""
    t = type(value)
    if t is RawText:
        value = str(value)
        t = str
    if t is str:
        found = index.exact.get(value)
        if index.prefixes:
            found = _merge_prefix_hits(found, index.prefixes, value)
        if index.suffixes:
            found = _merge_suffix_hits(found, index.suffixes, value)
        if index.lower or index.lower_prefixes or index.lower_suffixes:
            lowered = value.lower()
            hit = index.lower.get(lowered)
            if hit:
                found = hit if found is None else found + hit
            if index.lower_prefixes:
                found = _merge_prefix_hits(found, index.lower_prefixes, lowered)
            if index.lower_suffixes:
                found = _merge_suffix_hits(found, index.lower_suffixes, lowered)
        return found
    if t is bool:
        return index.singletons.get(_SINGLETON_NAMES[value])
    if value is None:
        return index.singletons.get("None")
    if t is int or t is float:
        key = number_key(value)
        if key is None:
            return index.literals.get(number_literal(value))
        found = index.numbers.get(key)
        if index.ranges:
            hit = index.range_hits(key)
            if hit:
                found = hit if found is None else found + hit
        return found
    return None


def _merge_prefix_hits(
    found: list[int] | None, prefixes: dict[int, dict[str, list[int]]], text: str
) -> list[int] | None:
    size = len(text)
    for length, table in prefixes.items():
        if length <= size:
            hit = table.get(text[:length])
            if hit:
                found = hit if found is None else found + hit
    return found


def _merge_suffix_hits(
    found: list[int] | None, suffixes: dict[int, dict[str, list[int]]], text: str
) -> list[int] | None:
    size = len(text)
    for length, table in suffixes.items():
        if length <= size:
            hit = table.get(text[size - length :])
            if hit:
                found = hit if found is None else found + hit
    return found


def anchored_matcher(
    conjunctions: Sequence[Conjunction], evaluators: tuple[Evaluator, ...]
) -> Walker | None:
    """A matcher through anchors, called as ``walker(event, event)``, or None when the set is
    too large or a conjunction has no anchor."""
    if len(conjunctions) > MAX_ANCHORED:
        return None
    options_per_conj: list[dict[Path, list[AnchorKey]]] = []
    bucket_sizes: Counter[tuple[Path, AnchorKey]] = Counter()
    for conj in conjunctions:
        options = {p: k for p, c in conj.items() if (k := anchor_keys(c)) is not None}
        if not options:
            return None
        options_per_conj.append(options)
        for path, keys in options.items():
            bucket_sizes.update((path, k) for k in keys)
    by_path: dict[Path, AnchorIndex] = {}
    for conj_id, options in enumerate(options_per_conj):
        # The anchor whose buckets are smallest filters best; numeric ranges overlap, so
        # they are the last resort.
        def cost(p: Path, options: dict[Path, list[AnchorKey]] = options) -> int:
            keys = options[p]
            ranged = len(conjunctions) if any(k[0] == "range" for k in keys) else 0
            return ranged + sum(bucket_sizes[(p, k)] for k in keys)

        path = min(options, key=cost)
        index = by_path.setdefault(path, AnchorIndex())
        for key in options[path]:
            index.add(key, conj_id)
    for index in by_path.values():
        index.finalize()
    return anchor_walker(anchor_trie(by_path), evaluators)
