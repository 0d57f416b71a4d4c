"""Ruling records out on their raw bytes, before decoding them (pure).

A payload a source decodes for the filter (Kafka ``value``, SQS ``body``) is often JSON of
which the patterns need one string: ``{"value": {"kind": ["refund"]}}`` holds only for a
payload whose text has ``refund`` in it. When every pattern needs such a string, a payload
holding none of them cannot match, and need not be decoded at all.

This is exact, never a guess: a string inside JSON text that has no backslash is written as
its own UTF-8 bytes (escapes are the only other way to write it), and text that is not JSON
is matched as it is (:class:`~router.filters.spec.RawText`). A payload with a backslash is
always decoded. Bytes that are not UTF-8 decode with replacement characters, which leaves the
bytes of every valid character as they were, so a string without U+FFFD still shows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

from router.filters.spec import Conjunction, Exact, Prefix, Suffix, ValueTest

MAX_NEEDLES = 8
"""More strings than this are searched for with one regular expression."""


def needed_strings(conjunctions: Sequence[Conjunction], field: str) -> frozenset[bytes] | None:
    """The strings (UTF-8) of which a payload decoded into the top-level ``field`` must hold
    one for any of ``conjunctions`` to hold, or None when some conjunction needs none."""
    needed: set[bytes] = set()
    for conj in conjunctions:
        best: frozenset[bytes] | None = None
        for path, cond in conj.items():
            if not path or path[0] != field or not isinstance(cond, tuple):
                continue
            texts = _texts(cond)
            if texts is not None and (best is None or min(map(len, texts)) > min(map(len, best))):
                best = texts
        if best is None:
            return None
        needed |= best
    # A string that holds another of them adds nothing: the shorter one shows whenever it does.
    return frozenset(s for s in needed if not any(o != s and o in s for o in needed)) or None


def _texts(cond: tuple[ValueTest, ...]) -> frozenset[bytes] | None:
    """What a value holds when one of ``cond``'s tests (ORed) holds for it: the text of an
    exact string, prefix or suffix (case-sensitive); None when some test needs no text."""
    texts: set[bytes] = set()
    for test in cond:
        match test:
            case Exact(str() as text) | Prefix(text, False) | Suffix(text, False):
                if not text or "\ufffd" in text:
                    return None
                texts.add(text.encode())
            case _:
                return None
    return frozenset(texts) or None


def may_match(needed: Collection[bytes]) -> Callable[[object], bool]:
    """``check(payload)``: False only when ``payload`` (bytes) cannot match, holding none of
    ``needed`` and no backslash. Anything but bytes may match."""
    if len(needed) > MAX_NEEDLES:
        found = re.compile(b"|".join(re.escape(s) for s in needed)).search

        def check_all(payload: object) -> bool:
            if type(payload) is not bytes:
                return True
            return b"\\" in payload or found(payload) is not None

        return check_all
    needles = tuple(sorted(needed, key=len, reverse=True))

    def check(payload: object) -> bool:
        if type(payload) is not bytes or b"\\" in payload:
            return True
        for needle in needles:  # noqa: SIM110 - no generator per record
            if needle in payload:
                return True
        return False

    return check
