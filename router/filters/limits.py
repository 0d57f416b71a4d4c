"""AWS's limits on a pattern as a whole: its size, its nesting, and its wildcard complexity.

Size and nesting are checked before a pattern is parsed; the wildcard complexity after, on
the parsed conjunctions (see :func:`wildcard_complexity`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from router.filters.spec import (
    MAX_NESTING_DEPTH,
    MAX_WILDCARD_COMPLEXITY,
    AnythingButWildcard,
    Conjunction,
    Path,
    Wildcard,
)

TOO_COMPLEX_MESSAGE: Final = "Rule is too complex"
# Distinct sets of simultaneously matching prefixes explored before giving up on finding a
# worse one (a pattern of at most 4096 characters stays far below this in practice).
_MAX_STATES: Final = 20_000
_STAR: Final = None


def nesting_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a decoded JSON value (a scalar is 0).

    Iterative, so a pathologically deep value cannot exhaust the interpreter's stack.
    """
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth = max(depth, level)
        if depth > MAX_NESTING_DEPTH:
            return depth
        stack.extend((child, level + 1) for child in children)
    return depth


def nesting_message(depth: int) -> str:
    shown = f"{depth}" if depth <= MAX_NESTING_DEPTH + 1 else f"more than {MAX_NESTING_DEPTH}"
    return (
        f"pattern nesting depth ({shown}) exceeds the maximum supported ({MAX_NESTING_DEPTH} "
        "levels of objects and arrays)"
    )


def _tokens(text: str) -> tuple[str | None, ...]:
    """A validated wildcard expression as characters, ``None`` for each unescaped ``*``."""
    out: list[str | None] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(_STAR if text[i] == "*" else text[i])
            i += 1
    return tuple(out)


def wildcard_complexity(texts: Sequence[str], cap: int = MAX_WILDCARD_COMPLEXITY + 1) -> int:
    """The largest number of wildcard prefixes that one input string can match at once.

    This is event-ruler's measure (``MachineComplexityEvaluator``): for ``a*bb`` the input
    ``abb`` is matched by the prefixes ``a*``, ``a*b`` and ``a*bb``, so the complexity is 3;
    prefixes of several expressions for the same field add up.  Evaluation stops at ``cap``.
    """
    patterns = [_tokens(t) for t in dict.fromkeys(texts)]
    if not patterns:
        return 0

    def closure(states: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        # A "*" also matches the empty string: a prefix ending before it extends over it.
        todo = list(states)
        while todo:
            i, k = todo.pop()
            tokens = patterns[i]
            if k < len(tokens) and tokens[k] is _STAR and (i, k + 1) not in states:
                states.add((i, k + 1))
                todo.append((i, k + 1))
        return frozenset(states)

    def step(states: frozenset[tuple[int, int]], ch: str) -> frozenset[tuple[int, int]]:
        nxt: set[tuple[int, int]] = set()
        for i, k in states:
            tokens = patterns[i]
            if k > 0 and tokens[k - 1] is _STAR:
                nxt.add((i, k))  # the star takes this character too
            if k < len(tokens) and tokens[k] == ch:
                nxt.add((i, k + 1))
        return closure(nxt)

    # Characters that appear in the expressions, plus one that appears in none.
    alphabet = sorted({c for p in patterns for c in p if c is not None})
    other = "\x00"
    while other in alphabet:
        other = chr(ord(other) + 1)
    alphabet.append(other)
    start = closure({(i, 0) for i in range(len(patterns))})
    seen = {start}
    queue = [start]
    worst = 0
    while queue:
        states = queue.pop()
        for ch in alphabet:
            nxt = step(states, ch)
            if not nxt or nxt in seen:
                continue
            # Prefixes of length 0 are the start state, not a matched prefix.
            size = sum(1 for _, k in nxt if k > 0)
            if size >= cap:
                return cap
            worst = max(worst, size)
            if len(seen) >= _MAX_STATES:
                return worst
            seen.add(nxt)
            queue.append(nxt)
    return worst


def too_complex_path(conjunctions: Sequence[Conjunction]) -> Path | None:
    """The first field whose wildcard expressions exceed AWS's complexity limit, if any.

    As in event-ruler, the expressions of one field are evaluated together (they share one
    matching automaton), ``wildcard`` and ``anything-but`` ``wildcard`` alike.
    """
    by_path: dict[Path, list[str]] = {}
    for conj in conjunctions:
        for path, cond in conj.items():
            if not isinstance(cond, tuple):
                continue
            for test in cond:
                if isinstance(test, Wildcard):
                    by_path.setdefault(path, []).append(test.text)
                elif isinstance(test, AnythingButWildcard):
                    by_path.setdefault(path, []).extend(test.texts)
    for path, texts in by_path.items():
        if wildcard_complexity(texts) > MAX_WILDCARD_COMPLEXITY:
            return path
    return None
