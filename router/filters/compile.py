"""Compile many event patterns into one matcher.

Two layers keep the cost of a match low and nearly independent of the number of patterns:

* **Anchor index.**  Each conjunction (a pattern, or one ``$or`` branch of it) is filed under
  one of its fields whose test can be looked up by value: exact values, prefixes, suffixes,
  equals-ignore-case, wildcards by their literal head or tail, and numeric ranges.  The field
  with the smallest buckets is chosen (ranges last), so patterns that differ by a customer id
  or an event type land in different buckets.  Per event, each anchor field is read once and
  its leaf values are looked up in dicts (prefixes and suffixes: one dict per length; numbers:
  one bisect in the segments cut by all range bounds), which yields the few candidate
  conjunctions worth checking.  Conjunctions without such a field (only anything-but, exists
  or cidr tests) are checked on every event.
* **Structural closures.**  Each conjunction becomes a tree of closures that walks the event
  once, only along the pattern's own keys, and stops at the first failing field.

Semantics are those of :mod:`router.filters.reference` (event-ruler's array-consistent
matching); see the docstring of :func:`_node_evaluator` for how the walk achieves them.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from router.filters.parse import PatternError, load_pattern, parse_pattern
from router.filters.spec import (
    ABSENT,
    MISSING,
    AnythingBut,
    Cond,
    Conjunction,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Path,
    Prefix,
    RawText,
    Suffix,
    ValueTest,
    Wildcard,
    leaf_matches,
    number_key,
    number_literal,
)

Evaluator = Callable[[Any], bool]
Predicate = Callable[[Any], bool]


def _dotted_view(obj: dict[str, Any], key: str) -> Any:
    """Event keys written with dots (``{"a.b": 1}``) stand for nested ones (``a`` → ``b``).

    Only consulted when the plain key is missing; the join is a C-speed test that the dict has
    a dotted key at all, so ordinary events pay one cheap check per missing key.
    """
    if "." not in "".join(obj):
        return MISSING
    head = key + "."
    view = {k[len(head) :]: v for k, v in obj.items() if k.startswith(head)}
    return view if view else MISSING


# --------------------------------------------------------------------------- leaf predicates


def _exact_predicate(values: list[Any]) -> Predicate:
    strings = frozenset(v for v in values if type(v) is str)
    bools = frozenset(v for v in values if type(v) is bool)
    has_null = any(v is None for v in values)
    numbers = [v for v in values if type(v) is int or type(v) is float]
    keys = frozenset(k for k in map(number_key, numbers) if k is not None)
    literals = frozenset(number_literal(n) for n in numbers if number_key(n) is None)

    def exact(v: Any) -> bool:
        t = type(v)
        if t is str:
            return v in strings
        if t is bool:
            return v in bools
        if v is None:
            return has_null
        if t is int or t is float:
            key = number_key(v)
            return key in keys if key is not None else number_literal(v) in literals
        return False

    return exact


def _test_predicate(test: ValueTest) -> Predicate:
    match test:
        case Exists():
            return _always
        case Prefix(text, False):
            return lambda v: type(v) is str and v.startswith(text)
        case Suffix(text, False):
            return lambda v: type(v) is str and v.endswith(text)
        case EqualsIgnoreCase(text):
            return lambda v: type(v) is str and v.lower() == text
        case Numeric(low, low_inclusive, high, high_inclusive):
            return _numeric_predicate(low, low_inclusive, high, high_inclusive)
        case AnythingBut(strings, numbers) if not numbers:
            return lambda v: type(v) is not str or v not in strings
    return partial(leaf_matches, test)


def _numeric_predicate(
    low: int | None, low_inclusive: bool, high: int | None, high_inclusive: bool
) -> Predicate:
    # Unbounded sides become impossible-to-cross sentinels: one comparison chain per value.
    lo = -1 if low is None else (low if low_inclusive else low + 1)
    hi = 1 << 62 if high is None else (high if high_inclusive else high - 1)

    def numeric(v: Any) -> bool:
        t = type(v)
        if t is not int and t is not float:
            return False
        key = number_key(v)
        return key is not None and lo <= key <= hi

    return numeric


def _always(v: Any) -> bool:
    return True


def make_predicate(tests: tuple[ValueTest, ...]) -> Predicate:
    """One predicate over a leaf value that is true when any of the tests is."""
    exact_values = [t.value for t in tests if isinstance(t, Exact)]
    others = [_test_predicate(t) for t in tests if not isinstance(t, Exact)]
    if exact_values:
        others.insert(0, _exact_predicate(exact_values))
    if len(others) == 1:
        return others[0]
    preds = tuple(others)

    def any_of(v: Any) -> bool:
        # Plain loops instead of any(): no generator object per leaf on the hot path.
        for p in preds:  # noqa: SIM110
            if p(v):
                return True
        return False

    return any_of


# --------------------------------------------------------------------------- structural walk


@dataclass(slots=True)
class _Node:
    own: Cond | None = None
    children: dict[str, _Node] = field(default_factory=dict)

    def has_positive(self) -> bool:
        if self.own is not None and self.own is not ABSENT:
            return True
        return any(c.has_positive() for c in self.children.values())


def _trie(conj: Conjunction) -> _Node:
    root = _Node()
    for path, cond in conj.items():
        node = root
        for key in path:
            node = node.children.setdefault(key, _Node())
        node.own = cond
    return root


def _string_set(cond: Cond | None) -> frozenset[str] | None:
    """The accepted strings when a condition is only exact strings (checked inline)."""
    if not isinstance(cond, tuple):
        return None
    if not all(isinstance(t, Exact) and type(t.value) is str for t in cond):
        return None
    return frozenset(t.value for t in cond if isinstance(t, Exact))


def _node_evaluator(node: _Node) -> Evaluator:
    """Closure deciding whether the event value found at this node's path satisfies it.

    Arrays are where array consistency comes from: when the subtree holds a positive test,
    one element must satisfy the whole subtree (all leaves picked in the same element); when
    it only holds ``exists: false`` tests, every element must (no leaf may exist anywhere).
    Nested arrays recurse into the same closure, which flattens them.
    """
    # Leaf fields with a positive test are checked inline when the value is a scalar (the
    # common case); everything else goes through the child's own closure.
    leaves = tuple(
        (key, _string_set(child.own), make_predicate(child.own), _node_evaluator(child))
        for key, child in node.children.items()
        if not child.children and isinstance(child.own, tuple)
    )
    children = tuple(
        (key, _node_evaluator(child), bool(child.children))
        for key, child in node.children.items()
        if child.children or not isinstance(child.own, tuple)
    )
    positive = node.has_positive()
    children_missing_ok = not any(c.has_positive() for c in node.children.values())
    own_pred = make_predicate(node.own) if isinstance(node.own, tuple) else None
    own_absent = node.own is ABSENT
    has_children = bool(node.children)
    dict_ok_without_children = own_pred is None

    def evaluate(v: Any) -> bool:
        t = type(v)
        if t is dict:
            if not dict_ok_without_children:
                return False
            for key, strings, pred, leaf_eval in leaves:
                cv = v.get(key, MISSING)
                tcv = type(cv)
                if strings is not None and tcv is str:
                    if cv not in strings:
                        return False
                elif tcv is str or tcv is int or tcv is float or tcv is bool or cv is None:
                    if not pred(cv):
                        return False
                elif not leaf_eval(cv):
                    return False
            for key, child_eval, deep in children:
                cv = v.get(key, MISSING)
                if cv is MISSING and deep:
                    cv = _dotted_view(v, key)
                if not child_eval(cv):
                    return False
            return True
        if t is list:
            if positive:
                for element in v:  # noqa: SIM110
                    if evaluate(element):
                        return True
                return False
            for element in v:  # noqa: SIM110
                if not evaluate(element):
                    return False
            return True
        if v is MISSING:
            return not positive
        if t is RawText:
            if has_children:
                return False  # nothing can be looked up inside a payload that is not JSON
            v = str(v)
        if own_pred is not None:
            return children_missing_ok and own_pred(v)
        if own_absent:
            return False
        return children_missing_ok

    return evaluate


# --------------------------------------------------------------------------- anchor index

_AnchorKey = tuple[str, Any]  # (kind, value) with kind in str/num/lit/bool/null/prefix/lower...


def _anchor_keys(cond: Cond) -> list[_AnchorKey] | None:
    """Lookup keys under which a leaf satisfying ``cond`` is sure to be found, if any."""
    if not isinstance(cond, tuple):
        return None
    keys: list[_AnchorKey] = []
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


def _wildcard_anchor(text: str) -> _AnchorKey | None:
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
class _AnchorIndex:
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

    def add(self, key: _AnchorKey, conj_id: int) -> None:
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


class Matcher:
    """A compiled set of patterns.  ``matches(event)`` is true when any pattern matches.

    The event is the already decoded JSON value (dicts, lists, str, int, float, bool, None),
    usually the output of :func:`router.filters.filter_view`.  Matchers are immutable and
    safe to share between tasks.
    """

    __slots__ = ("_evaluators", "_match_all", "_scan", "_walk")

    def __init__(self, conjunctions: Sequence[Conjunction], *, match_all: bool) -> None:
        self._match_all = match_all
        self._evaluators: tuple[Evaluator, ...] = tuple(
            _node_evaluator(_trie(c)) for c in conjunctions
        )
        candidates: list[dict[Path, list[_AnchorKey]]] = []
        bucket_sizes: Counter[tuple[Path, _AnchorKey]] = Counter()
        for conj in conjunctions:
            options = {p: k for p, c in conj.items() if (k := _anchor_keys(c)) is not None}
            candidates.append(options)
            for path, keys in options.items():
                bucket_sizes.update((path, k) for k in keys)
        by_path: dict[Path, _AnchorIndex] = {}
        scan: list[Evaluator] = []
        for conj_id, options in enumerate(candidates):
            if not options:
                scan.append(self._evaluators[conj_id])
                continue

            # The anchor whose buckets are smallest filters best; numeric ranges overlap, so
            # they are the last resort.
            def cost(p: Path, options: dict[Path, list[_AnchorKey]] = options) -> int:
                keys = options[p]
                ranged = len(conjunctions) if any(k[0] == "range" for k in keys) else 0
                return ranged + sum(bucket_sizes[(p, k)] for k in keys)

            path = min(options, key=cost)
            index = by_path.setdefault(path, _AnchorIndex())
            for key in options[path]:
                index.add(key, conj_id)
        for index in by_path.values():
            index.finalize()
        self._walk = _anchor_walker(_anchor_trie(by_path), self._evaluators)
        self._scan = tuple(scan)

    def matches(self, event: Any) -> bool:
        """True when any of the compiled patterns matches the decoded event."""
        if self._match_all:
            return True
        if self._walk(event, event):
            return True
        for evaluate in self._scan:  # noqa: SIM110
            if evaluate(event):
                return True
        return False

    __call__ = matches


@dataclass(slots=True)
class _AnchorNode:
    index: _AnchorIndex | None = None
    children: dict[str, _AnchorNode] = field(default_factory=dict)


def _anchor_trie(by_path: dict[Path, _AnchorIndex]) -> _AnchorNode:
    root = _AnchorNode()
    for path, index in by_path.items():
        node = root
        for key in path:
            node = node.children.setdefault(key, _AnchorNode())
        node.index = index
    return root


Walker = Callable[[Any, Any], bool]


def _anchor_walker(node: _AnchorNode, evaluators: tuple[Evaluator, ...]) -> Walker:
    """Closure walking the event along all anchor paths at once (shared prefixes read once).

    At each anchor path every leaf value (arrays flattened, consistency ignored: this only
    proposes candidates) is looked up in the index; candidates are then fully evaluated.
    """
    # Children that are plain anchor leaves are looked up inline: one call less per field.
    inner = tuple(
        (key, _anchor_walker(child, evaluators))
        for key, child in node.children.items()
        if child.children
    )
    leaves = tuple(
        (key, child.index, _anchor_walker(child, evaluators), child.index.exact_only())
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
                    cv = _dotted_view(v, key)
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
                    cv = _dotted_view(v, key)
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


def _lookup(index: _AnchorIndex, value: Any) -> list[int] | None:
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


def compile_patterns(patterns: Sequence[str | bytes | Mapping[str, Any]]) -> Matcher:
    """Validate and compile patterns (JSON text or mappings) into one :class:`Matcher`.

    An empty sequence gives a matcher that matches every event, like an event source mapping
    without filter criteria.  Raises :class:`PatternError` (with ``path`` ``[i].key.path``)
    for the first invalid pattern.
    """
    if isinstance(patterns, str | bytes | Mapping):
        raise TypeError("compile_patterns() takes a sequence of patterns, not one pattern")
    conjunctions: list[Conjunction] = []
    for i, pattern in enumerate(patterns):
        try:
            conjunctions.extend(parse_pattern(load_pattern(pattern)))
        except PatternError as e:
            where = f"[{i}]" + (f".{e.path}" if e.path else "")
            raise PatternError(e.reason, where) from None
    return Matcher(conjunctions, match_all=not patterns)
