"""Compile many event patterns into one matcher.

Two layers keep the cost of a match low and independent of the number of patterns:

* **Shared walk.**  Every conjunction (a pattern, or one ``$or`` branch of it) owns a bit.
  One walk of the event along the trie of all field paths (:mod:`router.filters.walk`)
  looks every leaf value up in per-field indexes (:mod:`router.filters.leaves`: every
  operator is a lookup, anything-but a complement, numeric and cidr a bisect) and yields the
  bits of the conjunctions ruled out.  What is left are candidates.
* **Anchors, for a few patterns.**  When a set has at most 16 conjunctions and each has a
  field that can be looked up by value (:mod:`router.filters.index`), those fields are
  looked up instead and candidates checked until the first match: for a handful of filters
  of which most records match one, that reads fewer fields than the walk.
* **Structural closures.**  Each conjunction also becomes a tree of closures that walks the
  event only along its own keys, with exact array-consistent semantics.  Candidates are
  checked with it, lowest bit first, until one matches; the walk being exact outside arrays,
  the first candidate almost always does.

Semantics are those of :mod:`router.filters.reference` (event-ruler's array-consistent
matching); see the docstring of :func:`_node_evaluator` for how the walk achieves them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from router.filters.index import anchored_matcher
from router.filters.leaves import FieldIndex
from router.filters.parse import PatternError, load_pattern, parse_pattern
from router.filters.raw import may_match, needed_strings
from router.filters.scalar import numeric_bounds, scalar_matcher
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
    Prefix,
    RawText,
    Suffix,
    ValueTest,
    leaf_matches,
    number_key,
    number_literal,
)
from router.filters.walk import PathNode, dotted_view, failures

Evaluator = Callable[[Any], bool]

Predicate = Callable[[Any], bool]


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
    lo, hi = numeric_bounds(low, low_inclusive, high, high_inclusive)

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
                    cv = dotted_view(v, key)
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


def _path_trie(conjunctions: Sequence[Conjunction]) -> PathNode:
    """Every path of every conjunction, with each condition filed under the conjunction's bit."""
    count = 0
    root = PathNode(path_id=count)
    for conj_id, conj in enumerate(conjunctions):
        bit = 1 << conj_id
        for path, cond in conj.items():
            node = root
            for key in path:
                child = node.children.get(key)
                if child is None:
                    count += 1
                    child = node.children[key] = PathNode(path_id=count)
                node = child
            if node.index is None:
                node.index = FieldIndex()
            if cond is ABSENT:
                node.absent |= bit
            else:
                assert isinstance(cond, tuple)
                node.need |= bit
                node.index.add(cond, bit)
    return root


def _loose_bits(node: PathNode) -> int:
    bits = node.index.loose if node.index is not None else 0
    for child in node.children.values():
        bits |= _loose_bits(child)
    return bits


class Matcher:
    """A compiled set of patterns.  ``matches(event)`` is true when any pattern matches.

    The event is the already decoded JSON value (dicts, lists, str, int, float, bool, None),
    usually the output of :func:`router.filters.filter_view`.  Matchers are safe to share
    between tasks: what one keeps of the events it saw (which pattern to try first) changes
    how fast it answers, never what.
    """

    __slots__ = (
        "_all",
        "_anchored",
        "_conjunctions",
        "_evaluators",
        "_fails",
        "_loose",
        "_match_all",
        "_scalar",
        "_shift",
        "fields",
    )

    def __init__(self, conjunctions: Sequence[Conjunction], *, match_all: bool) -> None:
        self._match_all = match_all
        self._conjunctions = tuple(conjunctions)
        self.fields: frozenset[str] | None = None
        """The top-level keys the patterns look at (None: any). Keys outside it never change
        whether an event matches, so a source may leave them out of the event it builds."""
        if not match_all and all(c and all(c) for c in conjunctions):
            self.fields = frozenset(path[0] for c in conjunctions for path in c)
        self._evaluators: tuple[Evaluator, ...] = tuple(
            _node_evaluator(_trie(c)) for c in conjunctions
        )
        self._shift = len(conjunctions)
        self._all = (1 << self._shift) - 1
        trie = _path_trie(conjunctions)
        self._fails = failures(trie, self._shift)
        # Conditions the walk leaves to the exact check (two anything-buts ORed in one field).
        self._loose = _loose_bits(trie)
        # A few patterns that can all be found by value: through anchors, first match wins.
        self._anchored = anchored_matcher(conjunctions, self._evaluators) if conjunctions else None
        # Fields of nested objects holding plain values (the usual event): generated code.
        self._scalar = None if match_all else scalar_matcher(conjunctions, make_predicate)

    def matches(self, event: Any) -> bool:
        """True when any of the compiled patterns matches the decoded event."""
        scalar = self._scalar
        if scalar is not None:
            found = scalar(event)
            if found is not None:
                return found
        anchored = self._anchored
        if anchored is not None:
            return anchored(event, event)
        if self._match_all:
            return True
        result = self._fails(event)
        candidates = self._all & ~result
        if not candidates:
            return False
        uncertain = (result >> self._shift) | self._loose
        if candidates & ~uncertain:
            return True  # ruled in by the walk, which is exact outside arrays
        evaluators = self._evaluators
        while candidates:
            lowest = candidates & -candidates
            if evaluators[lowest.bit_length() - 1](event):
                return True
            candidates ^= lowest
        return False

    __call__ = matches

    def needed_strings(self, field: str) -> frozenset[bytes] | None:
        """The strings (UTF-8) of which the raw text decoded into the top-level ``field``
        must hold one for any pattern to match (see :mod:`router.filters.raw`), or None when
        some pattern needs none there."""
        if self._match_all:
            return None
        return needed_strings(self._conjunctions, field)

    def payload_check(self, field: str) -> Callable[[object], bool] | None:
        """``check(payload)``, False for raw bytes decoded into the top-level ``field`` that
        no pattern can match (see :meth:`needed_strings`); None when there is nothing to
        look for."""
        needed = self.needed_strings(field)
        return None if needed is None else may_match(needed)


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
