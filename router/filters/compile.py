"""Compile many event patterns into one matcher.

Two layers keep the cost of a match low and nearly independent of the number of patterns:

* **Anchor index.**  Each conjunction (a pattern, or one ``$or`` branch of it) is filed under
  one of its fields whose test can be looked up by value: exact values, prefixes and
  equals-ignore-case.  The field with the smallest buckets is chosen, so patterns that differ
  by a customer id or an event type land in different buckets.  Per event, each anchor field
  is read once and its leaf values are looked up in dicts (prefixes: one dict per prefix
  length), which yields the few candidate conjunctions worth checking.  Conjunctions without
  such a field are checked on every event.
* **Structural closures.**  Each conjunction becomes a tree of closures that walks the event
  once, only along the pattern's own keys, and stops at the first failing field.

Semantics are those of :mod:`router.filters.reference` (event-ruler's array-consistent
matching); see the docstring of :func:`_node_evaluator` for how the walk achieves them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from router.filters.parse import PatternError, load_pattern, parse_pattern
from router.filters.spec import (
    ABSENT,
    MISSING,
    Cond,
    Conjunction,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Path,
    Prefix,
    RawText,
    Suffix,
    ValueTest,
    leaf_matches,
    number_key,
    number_literal,
)

Evaluator = Callable[[Any], bool]
Predicate = Callable[[Any], bool]


def _dotted_view(obj: dict[str, Any], key: str) -> Any:
    """Event keys written with dots (``{"a.b": 1}``) stand for nested ones (``a`` → ``b``).

    Only consulted when the plain key is missing, so ordinary events never pay for it.
    """
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
    return partial(leaf_matches, test)


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
        for p in preds:
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


def _node_evaluator(node: _Node) -> Evaluator:
    """Closure deciding whether the event value found at this node's path satisfies it.

    Arrays are where array consistency comes from: when the subtree holds a positive test,
    one element must satisfy the whole subtree (all leaves picked in the same element); when
    it only holds ``exists: false`` tests, every element must (no leaf may exist anywhere).
    Nested arrays recurse into the same closure, which flattens them.
    """
    children = tuple(
        (key, _node_evaluator(child), bool(child.children)) for key, child in node.children.items()
    )
    positive = node.has_positive()
    children_missing_ok = not any(c.has_positive() for c in node.children.values())
    own_pred = make_predicate(node.own) if isinstance(node.own, tuple) else None
    own_absent = node.own is ABSENT
    has_children = bool(children)
    dict_ok_without_children = own_pred is None

    def evaluate(v: Any) -> bool:
        t = type(v)
        if t is dict:
            if not dict_ok_without_children:
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
                for element in v:
                    if evaluate(element):
                        return True
                return False
            for element in v:
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
        elif isinstance(test, EqualsIgnoreCase):
            keys.append(("lower", test.text))
        else:
            return None
    return keys


@dataclass(slots=True)
class _AnchorIndex:
    exact: dict[Any, list[int]] = field(default_factory=dict)  # str values
    numbers: dict[int, list[int]] = field(default_factory=dict)
    literals: dict[str, list[int]] = field(default_factory=dict)
    singletons: dict[Any, list[int]] = field(default_factory=dict)  # True/False/None by id
    prefixes: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    lower: dict[str, list[int]] = field(default_factory=dict)
    lower_prefixes: dict[int, dict[str, list[int]]] = field(default_factory=dict)

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
        else:
            self.lower_prefixes.setdefault(len(value), {}).setdefault(value, []).append(conj_id)


_SINGLETON_NAMES: Final = {True: "True", False: "False"}


class Matcher:
    """A compiled set of patterns.  ``matches(event)`` is true when any pattern matches.

    The event is the already decoded JSON value (dicts, lists, str, int, float, bool, None),
    usually the output of :func:`router.filters.filter_view`.  Matchers are immutable and
    safe to share between tasks.
    """

    __slots__ = ("_anchors", "_evaluators", "_match_all", "_scan")

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
            # The anchor whose buckets are smallest filters best.
            path = min(options, key=lambda p: sum(bucket_sizes[(p, k)] for k in options[p]))
            index = by_path.setdefault(path, _AnchorIndex())
            for key in options[path]:
                index.add(key, conj_id)
        self._anchors = tuple((path, index) for path, index in by_path.items())
        self._scan = tuple(scan)

    def matches(self, event: Any) -> bool:
        """True when any of the compiled patterns matches the decoded event."""
        if self._match_all:
            return True
        evaluators = self._evaluators
        for path, index in self._anchors:
            value: Any = event
            for key in path:
                if type(value) is dict:
                    nxt = value.get(key, MISSING)
                    value = _dotted_view(value, key) if nxt is MISSING else nxt
                else:
                    break
            else:
                if type(value) is not dict and type(value) is not list:
                    ids = _lookup(index, value)
                    if ids is not None:
                        for conj_id in ids:
                            if evaluators[conj_id](event):
                                return True
                    continue
            # Arrays (or odd shapes) on the way: gather every leaf at the path.
            leaves: list[Any] = []
            _collect(event, path, 0, leaves)
            for leaf in leaves:
                ids = _lookup(index, leaf)
                if ids is not None:
                    for conj_id in ids:
                        if evaluators[conj_id](event):
                            return True
        for evaluate in self._scan:
            if evaluate(event):
                return True
        return False

    __call__ = matches


def _collect(value: Any, path: Path, depth: int, out: list[Any]) -> None:
    t = type(value)
    if t is list:
        for element in value:
            _collect(element, path, depth, out)
    elif depth == len(path):
        if t is not dict and value is not MISSING:
            out.append(value)
    elif t is dict:
        key = path[depth]
        nxt = value.get(key, MISSING)
        if nxt is MISSING:
            nxt = _dotted_view(value, key)
        _collect(nxt, path, depth + 1, out)


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
        if index.lower or index.lower_prefixes:
            lowered = value.lower()
            hit = index.lower.get(lowered)
            if hit:
                found = hit if found is None else found + hit
            if index.lower_prefixes:
                found = _merge_prefix_hits(found, index.lower_prefixes, lowered)
        return found
    if t is bool:
        return index.singletons.get(_SINGLETON_NAMES[value])
    if value is None:
        return index.singletons.get("None")
    if t is int or t is float:
        key = number_key(value)
        if key is not None:
            return index.numbers.get(key)
        return index.literals.get(number_literal(value))
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
