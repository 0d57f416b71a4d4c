"""Per field: which conjunctions a leaf value satisfies, as a bitset, in lookups.

Every conjunction (a pattern, or one ``$or`` branch of one) owns one bit of a Python ``int``.
For each field path the patterns name, a :class:`FieldIndex` files every value test under a
structure it can be found in by the value itself:

* exact strings, numbers, ``true``/``false``/``null`` and equals-ignore-case: dicts;
* prefixes and suffixes (plain and ignore-case): one dict per length;
* numeric ranges and cidr blocks: the key line is cut at every bound, each segment carries
  the bits of the ranges covering it; a value finds its bits with one bisect;
* wildcards: filed by their literal head or tail (then checked with their regex), the rest
  checked one by one;
* anything-but: as a complement; the bits of every anything-but test at the field, minus
  those whose excluded values (a dict, prefix and suffix tables, wildcards) the value hits;
* ``exists: true``: bits set for any leaf.

So the cost of one leaf is a handful of dict lookups and integer operations, whatever the
number of patterns.  :meth:`FieldIndex.compile` returns one function per JSON type that only
does the lookups this field needs.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from router.filters.spec import (
    FIVE_BILLION,
    AnythingBut,
    AnythingButIgnoreCase,
    AnythingButPrefix,
    AnythingButSuffix,
    AnythingButWildcard,
    Cidr,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Prefix,
    Suffix,
    ValueTest,
    Wildcard,
    number_key,
    number_literal,
)

Bits = int
LeafBits = Callable[[Any], Bits]

_KEY_MAX: Final = 10**16  # number_key(5e9)


def wildcard_anchor(text: str) -> tuple[str, str] | None:
    """``("prefix", head)`` or ``("suffix", tail)``: a literal every match starts/ends with."""
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
        return ("prefix", head)
    tail = "".join(c for c, _ in itertools.takewhile(lambda x: not x[1], reversed(chars)))
    return ("suffix", tail[::-1]) if tail else None


class _Segments:
    """Inclusive integer ranges, each with bits; ``lookup(key)`` ORs the bits covering key."""

    __slots__ = ("bits", "bounds", "ranges")

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int, Bits]] = []
        self.bounds: list[int] = []
        self.bits: list[Bits] = []

    def add(self, low: int, high: int, bits: Bits) -> None:
        if low <= high:
            self.ranges.append((low, high, bits))

    def finalize(self) -> None:
        # Sweep over every bound, keeping the OR of the ranges open at each point.
        opens: dict[int, list[Bits]] = {}
        closes: dict[int, list[Bits]] = {}
        for low, high, bits in self.ranges:
            opens.setdefault(low, []).append(bits)
            closes.setdefault(high + 1, []).append(bits)
        active: dict[Bits, int] = {}  # bits -> how many open ranges carry them
        for point in sorted(opens.keys() | closes.keys()):
            for bits in closes.get(point, ()):
                active[bits] -= 1
                if not active[bits]:
                    del active[bits]
            for bits in opens.get(point, ()):
                active[bits] = active.get(bits, 0) + 1
            union = 0
            for bits in active:
                union |= bits
            self.bounds.append(point)
            self.bits.append(union)

    def lookup(self, key: int) -> Bits:
        i = bisect_right(self.bounds, key) - 1
        return self.bits[i] if i >= 0 else 0


def _add(table: dict[Any, Bits], key: Any, bit: Bits) -> None:
    table[key] = table.get(key, 0) | bit


def _add_sized(tables: dict[int, dict[str, Bits]], text: str, bit: Bits) -> None:
    _add(tables.setdefault(len(text), {}), text, bit)


def _prefix_hits(tables: tuple[tuple[int, dict[str, Bits]], ...], text: str) -> Bits:
    bits = 0
    size = len(text)
    for length, table in tables:
        if length > size:
            break
        bits |= table.get(text[:length], 0)
    return bits


def _suffix_hits(tables: tuple[tuple[int, dict[str, Bits]], ...], text: str) -> Bits:
    bits = 0
    size = len(text)
    for length, table in tables:
        if length > size:
            break
        bits |= table.get(text[size - length :], 0)
    return bits


def _sized(tables: dict[int, dict[str, Bits]]) -> tuple[tuple[int, dict[str, Bits]], ...]:
    return tuple(sorted(tables.items()))


Regexes = list[tuple[Any, Bits]]


def _sized_lists(
    tables: dict[int, dict[str, Regexes]],
) -> tuple[tuple[int, dict[str, Regexes]], ...]:
    return tuple(sorted(tables.items()))


def ip_key(text: str) -> tuple[int, int] | None:
    """``(version, address as int)`` for a string that is an IP address, else None."""
    if not text:
        return None
    if ":" not in text:
        # IPv4 through inet_pton (strict dotted quads, no leading zeros, as ipaddress):
        # ipaddress.ip_address costs ten times more per value.
        try:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        except (OSError, ValueError):
            return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.version, int(ip)


@dataclass(slots=True)
class FieldIndex:
    """The value tests of every conjunction at one field path, filed for lookup."""

    strings: dict[str, Bits] = field(default_factory=dict)
    numbers: dict[int, Bits] = field(default_factory=dict)
    literals: dict[str, Bits] = field(default_factory=dict)  # numbers beyond +/-5e9
    true: Bits = 0
    false: Bits = 0
    null: Bits = 0
    any_leaf: Bits = 0  # exists: true
    loose: Bits = 0  # conditions checked by the full evaluation only
    lower: dict[str, Bits] = field(default_factory=dict)
    prefixes: dict[int, dict[str, Bits]] = field(default_factory=dict)
    suffixes: dict[int, dict[str, Bits]] = field(default_factory=dict)
    lower_prefixes: dict[int, dict[str, Bits]] = field(default_factory=dict)
    lower_suffixes: dict[int, dict[str, Bits]] = field(default_factory=dict)
    wild_prefixes: dict[int, dict[str, list[tuple[Any, Bits]]]] = field(default_factory=dict)
    wild_suffixes: dict[int, dict[str, list[tuple[Any, Bits]]]] = field(default_factory=dict)
    wild_scan: list[tuple[Any, Bits]] = field(default_factory=list)
    ranges: _Segments = field(default_factory=_Segments)
    cidr4: _Segments = field(default_factory=_Segments)
    cidr6: _Segments = field(default_factory=_Segments)
    # anything-but: bits matched by default per JSON type, and what takes them away again
    ab_strings: Bits = 0  # every anything-but test that may match a string
    ab_others: Bits = 0  # every anything-but test (all match null, booleans, non-excluded)
    ab_numbers: Bits = 0  # every anything-but test that may match a number
    ab_excluded: dict[str, Bits] = field(default_factory=dict)
    ab_excluded_numbers: dict[int, Bits] = field(default_factory=dict)
    ab_prefixes: dict[int, dict[str, Bits]] = field(default_factory=dict)
    ab_suffixes: dict[int, dict[str, Bits]] = field(default_factory=dict)
    ab_lower: dict[str, Bits] = field(default_factory=dict)
    ab_wildcards: list[tuple[Any, Bits]] = field(default_factory=list)

    def add(self, tests: tuple[ValueTest, ...], bit: Bits) -> None:
        """File one conjunction's condition (any of ``tests``) under its bit."""
        anything_buts = [t for t in tests if _is_anything_but(t)]
        if len(anything_buts) > 1:
            # Two complements ORed cannot be told apart by one bit: leave it to the full check.
            self.loose |= bit
            return
        for test in tests:
            self._add_test(test, bit)

    def _add_test(self, test: ValueTest, bit: Bits) -> None:
        match test:
            case Exact(value):
                if type(value) is str:
                    _add(self.strings, value, bit)
                elif value is True:
                    self.true |= bit
                elif value is False:
                    self.false |= bit
                elif value is None:
                    self.null |= bit
                else:
                    key = number_key(value)
                    if key is None:
                        _add(self.literals, number_literal(value), bit)
                    else:
                        _add(self.numbers, key, bit)
            case Prefix(text, ignore_case):
                _add_sized(self.lower_prefixes if ignore_case else self.prefixes, text, bit)
            case Suffix(text, ignore_case):
                _add_sized(self.lower_suffixes if ignore_case else self.suffixes, text, bit)
            case EqualsIgnoreCase(text):
                _add(self.lower, text, bit)
            case Wildcard(text, regex):
                anchor = wildcard_anchor(text)
                if anchor is None:
                    self.wild_scan.append((regex, bit))
                else:
                    kind, literal = anchor
                    tables = self.wild_prefixes if kind == "prefix" else self.wild_suffixes
                    sized = tables.setdefault(len(literal), {})
                    sized.setdefault(literal, []).append((regex, bit))
            case Numeric(low, low_inclusive, high, high_inclusive):
                lo = -1 if low is None else (low if low_inclusive else low + 1)
                hi = _KEY_MAX + 1 if high is None else (high if high_inclusive else high - 1)
                self.ranges.add(lo, hi, bit)
            case Cidr(version, low, high):
                (self.cidr4 if version == 4 else self.cidr6).add(low, high, bit)
            case Exists():
                self.any_leaf |= bit
            case AnythingBut(strings, numbers):
                self.ab_others |= bit
                self.ab_strings |= bit
                self.ab_numbers |= bit
                for text in strings:
                    _add(self.ab_excluded, text, bit)
                for key in numbers:
                    _add(self.ab_excluded_numbers, key, bit)
            case AnythingButPrefix(texts) | AnythingButSuffix(texts):
                self.ab_others |= bit
                self.ab_strings |= bit
                self.ab_numbers |= bit
                excluded = (
                    self.ab_prefixes if isinstance(test, AnythingButPrefix) else self.ab_suffixes
                )
                for text in texts:
                    _add_sized(excluded, text, bit)
            case AnythingButIgnoreCase(lowered):
                self.ab_others |= bit
                self.ab_strings |= bit
                self.ab_numbers |= bit
                for text in lowered:
                    _add(self.ab_lower, text, bit)
            case AnythingButWildcard(_, regexes):
                self.ab_others |= bit
                self.ab_strings |= bit
                self.ab_numbers |= bit
                for regex in regexes:
                    self.ab_wildcards.append((regex, bit))
            case _:
                raise AssertionError(f"unknown value test {test!r}")

    def string_table(self) -> tuple[dict[str, Bits], Bits, bool] | None:
        """``(table, mask, complement)`` when one dict lookup gives a string's bits: the bits
        are ``table.get(v, 0)``, or ``mask & ~table.get(v, 0)`` when ``complement``."""
        others = (
            self.prefixes
            or self.suffixes
            or self.lower
            or self.lower_prefixes
            or self.lower_suffixes
            or self.wild_prefixes
            or self.wild_suffixes
            or self.wild_scan
            or self.cidr4.ranges
            or self.cidr6.ranges
            or self.any_leaf
            or self.loose
        )
        if others:
            return None
        plain_ab = not (self.ab_prefixes or self.ab_suffixes or self.ab_lower or self.ab_wildcards)
        if not self.ab_strings:
            return self.strings, 0, False
        if not self.strings and plain_ab:
            return self.ab_excluded, self.ab_strings, True
        return None

    def compile(self) -> tuple[LeafBits, LeafBits, LeafBits]:
        """Functions giving the satisfied bits of a str, a number, and true/false/null."""
        for segments in (self.ranges, self.cidr4, self.cidr6):
            segments.finalize()
        return self._string_bits(), self._number_bits(), self._other_bits()

    def _string_bits(self) -> LeafBits:
        base = self.any_leaf | self.loose
        strings = self.strings
        steps: list[LeafBits] = []
        if self.prefixes:
            prefixes = _sized(self.prefixes)
            steps.append(lambda v: _prefix_hits(prefixes, v))
        if self.suffixes:
            suffixes = _sized(self.suffixes)
            steps.append(lambda v: _suffix_hits(suffixes, v))
        if self.lower or self.lower_prefixes or self.lower_suffixes:
            lower = self.lower
            lower_prefixes = _sized(self.lower_prefixes)
            lower_suffixes = _sized(self.lower_suffixes)

            def ignore_case(v: str) -> Bits:
                lowered = v.lower()
                bits = lower.get(lowered, 0)
                if lower_prefixes:
                    bits |= _prefix_hits(lower_prefixes, lowered)
                if lower_suffixes:
                    bits |= _suffix_hits(lower_suffixes, lowered)
                return bits

            steps.append(ignore_case)
        if self.wild_prefixes or self.wild_suffixes or self.wild_scan:
            steps.append(self._wildcard_bits())
        if self.ranges.ranges or self.cidr4.ranges or self.cidr6.ranges:
            cidr4 = self.cidr4 if self.cidr4.ranges else None
            cidr6 = self.cidr6 if self.cidr6.ranges else None
            if cidr4 is not None or cidr6 is not None:

                def cidr(v: str) -> Bits:
                    found = ip_key(v)
                    if found is None:
                        return 0
                    version, key = found
                    table = cidr4 if version == 4 else cidr6
                    return table.lookup(key) if table is not None else 0

                steps.append(cidr)
        if self.ab_strings:
            steps.append(self._anything_but_string_bits())
        if not steps:
            if not base:

                def strings_only(v: str) -> Bits:
                    return strings.get(v, 0)

                return strings_only

            def exact_only(v: str) -> Bits:
                return strings.get(v, 0) | base

            return exact_only
        if len(steps) == 1:
            (step,) = steps
            if not strings and not base:
                return step

            def one_step(v: str) -> Bits:
                return strings.get(v, 0) | base | step(v)

            return one_step
        all_steps = tuple(steps)

        def string_bits(v: str) -> Bits:
            bits = strings.get(v, 0) | base
            for step in all_steps:
                bits |= step(v)
            return bits

        return string_bits

    def _wildcard_bits(self) -> LeafBits:
        wild_prefixes = _sized_lists(self.wild_prefixes)
        wild_suffixes = _sized_lists(self.wild_suffixes)
        scan = tuple(self.wild_scan)

        def wildcard(v: str) -> Bits:
            bits = 0
            size = len(v)
            for length, table in wild_prefixes:
                if length > size:
                    break
                for regex, bit in table.get(v[:length], []):
                    if regex.fullmatch(v) is not None:
                        bits |= bit
            for length, table in wild_suffixes:
                if length > size:
                    break
                for regex, bit in table.get(v[size - length :], []):
                    if regex.fullmatch(v) is not None:
                        bits |= bit
            for regex, bit in scan:
                if regex.fullmatch(v) is not None:
                    bits |= bit
            return bits

        return wildcard

    def _anything_but_string_bits(self) -> LeafBits:
        everything = self.ab_strings
        excluded = self.ab_excluded
        prefixes = _sized(self.ab_prefixes)
        suffixes = _sized(self.ab_suffixes)
        lower = self.ab_lower
        wildcards = tuple(self.ab_wildcards)
        if not (prefixes or suffixes or lower or wildcards):

            def plain(v: str) -> Bits:
                return everything & ~excluded.get(v, 0)

            return plain

        def anything_but(v: str) -> Bits:
            gone = excluded.get(v, 0)
            if prefixes:
                gone |= _prefix_hits(prefixes, v)
            if suffixes:
                gone |= _suffix_hits(suffixes, v)
            if lower:
                gone |= lower.get(v.lower(), 0)
            for regex, bit in wildcards:
                if regex.fullmatch(v) is not None:
                    gone |= bit
            return everything & ~gone

        return anything_but

    def _number_bits(self) -> LeafBits:
        base = self.any_leaf | self.loose
        numbers = self.numbers
        literals = self.literals
        segments = self.ranges if self.ranges.ranges else None
        ab_all = self.ab_numbers
        ab_excluded = self.ab_excluded_numbers
        if segments is None and not ab_all and not literals:

            def exact_numbers(v: Any) -> Bits:
                key = number_key(v)
                return (numbers.get(key, 0) if key is not None else 0) | base

            return exact_numbers

        bounds = segments.bounds if segments is not None else None
        segment_bits = segments.bits if segments is not None else []

        def number_bits(v: Any) -> Bits:
            # number_key, inlined: this runs for every number at a field with numeric tests.
            if not -FIVE_BILLION <= v <= FIVE_BILLION:
                # Beyond +/-5e9: only a literal match, and anything-but (nothing excluded).
                return literals.get(number_literal(v), 0) | base | ab_all
            key = int(1e6 * (FIVE_BILLION + float(v)))
            bits = numbers.get(key, 0) | base
            if bounds is not None:
                i = bisect_right(bounds, key) - 1
                if i >= 0:
                    bits |= segment_bits[i]
            if ab_all:
                bits |= ab_all & ~ab_excluded.get(key, 0)
            return bits

        return number_bits

    def _other_bits(self) -> LeafBits:
        base = self.any_leaf | self.loose | self.ab_others
        true, false, null = self.true | base, self.false | base, self.null | base

        def other_bits(v: Any) -> Bits:
            if v is None:
                return null
            return true if v is True else false

        return other_bits


def _is_anything_but(test: ValueTest) -> bool:
    return isinstance(
        test,
        AnythingBut
        | AnythingButPrefix
        | AnythingButSuffix
        | AnythingButIgnoreCase
        | AnythingButWildcard,
    )
