"""A straight-line matcher for the usual shape of filter patterns and events: every
condition on a field reached through objects, the event holding a plain value (string,
number, boolean, null) or an array of plain values there.

For such events array consistency plays no part and each conjunction is the AND of its
conditions' leaf predicates (an array holds when one of its values does), so a few patterns
become generated code: it reads each field once (shared prefixes once), tests exact strings
by set membership and numeric ranges by comparison inline (integers against integer
bounds), and first tries alone the conjunction that held for the most records lately.
Whenever the event is not of that shape at one of the fields (absent, an object, an array
holding arrays or objects, text that is not JSON) it answers None and the general matcher
decides; so it never changes what matches, only how fast
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
    number_key,
)

ScalarMatcher = Callable[[Any], bool | None]
"""``match(event)``: True or False when the event has plain values at every field the
patterns name, None when the general matcher must decide."""

HALVE_AT = 1024
"""The count of a conjunction at which every count is halved (recent records weigh most)."""

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


def integer_bounds(lo: int, hi: int) -> tuple[int, int]:
    """The integers whose :func:`~router.filters.spec.number_key` is within ``lo..hi``, as
    inclusive bounds (the key grows with the number, so they are a range); an empty range is
    ``(1, 0)``."""
    low, high = -int(FIVE_BILLION), int(FIVE_BILLION)

    def key(n: int) -> int:
        found = number_key(n)
        assert found is not None
        return found

    if key(low) > hi or key(high) < lo or lo > hi:
        return 1, 0
    # The first integer whose key reaches lo, then the last whose key stays within hi.
    a, b = low, high
    while a < b:
        mid = (a + b) // 2
        if key(mid) >= lo:
            b = mid
        else:
            a = mid + 1
    first = a
    a, b = first, high
    while a < b:
        mid = (a + b + 1) // 2
        if key(mid) <= hi:
            a = mid
        else:
            b = mid - 1
    return (first, a) if key(first) <= hi else (1, 0)


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
    terms: list[str] = []
    for c, conj in enumerate(conjunctions):
        parts = []
        for j, (path, cond) in enumerate(conj.items()):
            assert isinstance(cond, tuple)
            parts.append(_term(cond, paths[path], f"{c}_{j}", namespace, predicate))
        terms.append(" and ".join(parts))
    # One function per conjunction, reading only its own fields: the conjunction that held
    # for the most records lately is tried first (the records of a stream tend to be alike).
    # It answers True only when its own fields hold plain values and it holds, which is
    # enough for the whole set to match. When it does not hold, every conjunction is
    # evaluated, and those that hold are counted (halved now and then, to follow a change).
    lines: list[str] = []
    for c, conj in enumerate(conjunctions):
        lines.append(f"def c{c}(event):")
        lines += _reads([p for p in paths if p in conj], paths, "    return None")
        lines.append(f"    return {terms[c]}")
    namespace.update(H=[None], B=[0], C=[0] * len(conjunctions), halve=_halve)
    lines += [
        "def match(event):",
        "    hint = H[0]",
        "    if hint is not None and hint(event) is True:",
        "        return True",
    ]
    lines += _reads(list(paths), paths, "    return None")
    lines.append("    found = False")
    for c in range(len(conjunctions)):
        lines.append(f"    if {terms[c]}:")
        lines.append("        found = True")
        lines.append(f"        C[{c}] = n = C[{c}] + 1")
        lines.append("        if n > C[B[0]] or hint is None:")
        lines.append(f"            B[0] = {c}")
        lines.append(f"            H[0] = hint = c{c}")
        lines.append(f"        if n >= {HALVE_AT}:")
        lines.append("            halve(C)")
    lines.append("    return found")
    exec("\n".join(lines), namespace)  # code built from field names by repr()
    match: ScalarMatcher = namespace["match"]
    return match


def _reads(fields: list[Path], paths: dict[Path, int], bail: str) -> list[str]:
    """Lines that bind ``v<i>`` / ``t<i>`` to each of ``fields`` and its type, reading the
    objects along the way once each; ``bail`` (indented one level deeper) is where the event
    is not of the generated shape at one of them."""
    lines = ["    if type(event) is not dict:", f"    {bail}"]
    nodes: dict[Path, str] = {(): "event"}
    prefixes = {path[:i] for path in fields for i in range(1, len(path))}
    for prefix in sorted(prefixes, key=len):
        name = nodes[prefix] = f"n{len(nodes)}"
        lines.append(f"    {name} = {nodes[prefix[:-1]]}.get({prefix[-1]!r}, M)")
        lines.append(f"    if type({name}) is not dict:")
        lines.append(f"    {bail}")
    for path in fields:
        i = paths[path]
        lines.append(f"    v{i} = {nodes[path[:-1]]}.get({path[-1]!r}, M)")
        lines.append(f"    t{i} = type(v{i})")
        lines.append(f"    if t{i} is list:")
        lines.append(f"        if not plain(v{i}):")
        lines.append(f"        {bail}")
        lines.append(
            f"    elif t{i} is not str and t{i} is not int and t{i} is not float"
            f" and t{i} is not bool and v{i} is not None:"
        )
        lines.append(f"    {bail}")
    return lines


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
        namespace[f"IL{name}"], namespace[f"IH{name}"] = integer_bounds(lo, hi)
        # An integer is compared with the integers whose key is in range (one comparison
        # chain, without floats); a float gets number_key() inline: numbers beyond +/-5e9
        # have no key and match no range.
        return (
            f"(IL{name} <= {v} <= IH{name} if {t} is int else"
            f" {t} is float and -F <= {v} <= F"
            f" and L{name} <= int(1e6 * (F + float({v}))) <= H{name})"
        )
    return f"P{name}({v})"


def _halve(counts: list[int]) -> None:
    counts[:] = [n // 2 for n in counts]


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
