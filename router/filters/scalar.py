"""A straight-line matcher for the usual shape of filter patterns and events: every
condition on a field reached through objects, the event holding a plain value (string,
number, boolean, null) or an array of plain values there.

For such events array consistency plays no part and each conjunction is the AND of its
conditions' leaf predicates (an array holds when one of its values does), so a few patterns
become one generated function: it reads each field once (shared prefixes once), tests exact
strings by set membership and numeric ranges by comparison inline, and returns at the first
conjunction that holds. Whenever the event is not of that shape at one of the fields (absent,
an object, an array holding arrays or objects, text that is not JSON) it answers None and
the general matcher decides; so it never changes what matches, only how fast
(``tests/filters/test_differential.py`` checks it against the reference evaluator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from router.filters.spec import (
    ABSENT,
    FIVE_BILLION,
    MISSING,
    Conjunction,
    Exact,
    Exists,
    Numeric,
    Path,
    ValueTest,
)

ScalarMatcher = Callable[[Any], bool | None]
"""``match(event)``: True or False when the event has plain values at every field the
patterns name, None when the general matcher must decide."""

MAX_FIELDS = 32
"""More distinct fields than this: not worth generating (the general matcher indexes them)."""


def numeric_bounds(
    low: int | None, low_inclusive: bool, high: int | None, high_inclusive: bool
) -> tuple[int, int]:
    """Inclusive bounds on :func:`~router.filters.spec.number_key` of a numeric range;
    unbounded sides become keys no number reaches."""
    lo = -1 if low is None else (low if low_inclusive else low + 1)
    hi = 1 << 62 if high is None else (high if high_inclusive else high - 1)
    return lo, hi


def scalar_matcher(
    conjunctions: Sequence[Conjunction],
    predicate: Callable[[tuple[ValueTest, ...]], Callable[[Any], bool]],
) -> ScalarMatcher | None:
    """The generated matcher of ``conjunctions``, or None when one of them has a condition
    it cannot express (``exists: false``, a condition on the event itself, a field that is
    also the parent of another). ``predicate`` builds the leaf predicate of a condition, the
    one the general matcher applies to plain values."""
    if not conjunctions:
        return None
    paths: dict[Path, int] = {}
    for conj in conjunctions:
        if not conj:
            return None
        for path, cond in conj.items():
            if cond is ABSENT or not path:
                return None
            paths.setdefault(path, len(paths))
    if len(paths) > MAX_FIELDS:
        return None
    prefixes = {path[:i] for path in paths for i in range(1, len(path))}
    if any(path in prefixes for path in paths):
        return None  # a field that must be a plain value and an object at once

    namespace: dict[str, Any] = {"M": MISSING, "F": FIVE_BILLION, "plain": _plain, "A": _any}
    lines = ["def match(event):", "    if type(event) is not dict:", "        return None"]
    nodes: dict[Path, str] = {(): "event"}
    # Objects along the way first (each read once), then the fields.
    for prefix in sorted(prefixes, key=len):
        name = nodes[prefix] = f"n{len(nodes)}"
        lines.append(f"    {name} = {nodes[prefix[:-1]]}.get({prefix[-1]!r}, M)")
        lines.append(f"    if type({name}) is not dict:")
        lines.append("        return None")
    for path, i in paths.items():
        lines.append(f"    v{i} = {nodes[path[:-1]]}.get({path[-1]!r}, M)")
        lines.append(f"    t{i} = type(v{i})")
        lines.append(f"    if t{i} is list:")
        lines.append(f"        if not plain(v{i}):")
        lines.append("            return None")
        lines.append(
            f"    elif t{i} is not str and t{i} is not int and t{i} is not float"
            f" and t{i} is not bool and v{i} is not None:"
        )
        lines.append("        return None")
    for c, conj in enumerate(conjunctions):
        terms = []
        for j, (path, cond) in enumerate(conj.items()):
            assert isinstance(cond, tuple)
            terms.append(_term(cond, paths[path], f"{c}_{j}", namespace, predicate))
        lines.append(f"    if {' and '.join(terms)}:")
        lines.append("        return True")
    lines.append("    return False")
    exec("\n".join(lines), namespace)  # code built from field names by repr()
    match: ScalarMatcher = namespace["match"]
    return match


def _term(
    cond: tuple[ValueTest, ...],
    i: int,
    name: str,
    namespace: dict[str, Any],
    predicate: Callable[[tuple[ValueTest, ...]], Callable[[Any], bool]],
) -> str:
    # An array of plain values holds when one of its values does (array consistency only
    # concerns objects inside arrays).
    namespace[f"P{name}"] = predicate(cond)
    return f"({_scalar_term(cond, i, name, namespace)} if t{i} is not list else A(P{name}, v{i}))"


def _scalar_term(cond: tuple[ValueTest, ...], i: int, name: str, namespace: dict[str, Any]) -> str:
    v, t = f"v{i}", f"t{i}"
    if all(isinstance(test, Exact) and type(test.value) is str for test in cond):
        namespace[f"S{name}"] = frozenset(test.value for test in cond if isinstance(test, Exact))
        return f"({t} is str and {v} in S{name})"
    if any(isinstance(test, Exists) for test in cond):
        return "True"  # exists: true holds for any plain value
    if len(cond) == 1 and isinstance(cond[0], Numeric):
        test = cond[0]
        lo, hi = numeric_bounds(test.low, test.low_inclusive, test.high, test.high_inclusive)
        namespace[f"L{name}"], namespace[f"H{name}"] = lo, hi
        # number_key() inline: numbers beyond +/-5e9 have no key and match no range.
        return (
            f"(({t} is int or {t} is float) and -F <= {v} <= F"
            f" and L{name} <= int(1e6 * (F + float({v}))) <= H{name})"
        )
    return f"P{name}({v})"


def _plain(values: list[Any]) -> bool:
    """Whether an array holds only plain values (no arrays, no objects)."""
    for value in values:
        t = type(value)
        if t is list or t is dict:
            return False
    return True


def _any(predicate: Callable[[Any], bool], values: list[Any]) -> bool:
    for value in values:  # noqa: SIM110 - no generator per array
        if predicate(value):
            return True
    return False
