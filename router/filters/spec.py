"""Value-level building blocks of the pattern language, shared by the compiler and the reference.

A parsed pattern is a list of *conjunctions* (``$or`` is expanded into disjunctive normal form,
as AWS event-ruler's ``JsonRuleCompiler`` does).  A conjunction maps a dotted field path to a
:data:`Cond`: either :data:`ABSENT` (``{"exists": false}``) or a tuple of value tests, any of
which may match one leaf value of the event at that path.

Leaf semantics follow event-ruler's byte machine, where every event value is compared in its
JSON text form: strings are quoted, so string operators never match numbers, booleans or null,
while ``anything-but`` matches every value that is not explicitly excluded (including null).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Final

# Numbers are compared the way event-ruler's ComparableNumber does: limited to +/-5e9 and
# truncated to 6 decimal places.  Values outside the range never match numerically.
FIVE_BILLION: Final = 5_000_000_000
NUMBER_RANGE_MESSAGE: Final = "Value must be between -5.0E9 and 5.0E9, inclusive"

# Validation limits (docs/filters.md, "Limits").  A Lambda filter pattern has at most 4096
# characters (FilterCriteria.Filters[].Pattern).
MAX_PATTERN_CHARS: Final = 4096
# Objects and arrays nested deeper than this are refused.  AWS's JSON parser (Jackson) allows
# 1000 levels, which 4096 characters cannot reach with a valid pattern (about 680 at most);
# this engine compiles patterns recursively and keeps well within the interpreter's stack.
MAX_NESTING_DEPTH: Final = 200
# Largest wildcard complexity accepted for one pattern: how many wildcard pattern prefixes can
# match one value at once (event-ruler's MachineComplexityEvaluator); AWS refuses more with
# "Rule is too complex".
MAX_WILDCARD_COMPLEXITY: Final = 10


class RawText(str):
    """A payload that is not JSON, kept as text.

    :func:`router.filters.filter_view` wraps undecodable bodies in this type.  Patterns may
    match it as a plain string, but a pattern that looks *inside* it (a nested object under the
    field) never matches, not even with ``{"exists": false}``: Lambda drops records whose data
    is not JSON when the filter on that data is JSON.
    """

    __slots__ = ()


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def is_number(value: object) -> bool:
    """True for JSON numbers (bool is an int subclass in Python but not a JSON number)."""
    t = type(value)
    return t is int or t is float


def number_key(value: float) -> int | None:
    """Event-ruler's comparable form of a number, or None when outside +/-5e9."""
    if not -FIVE_BILLION <= value <= FIVE_BILLION:
        return None
    return int(1e6 * (FIVE_BILLION + float(value)))


def number_literal(value: float) -> str:
    """The JSON text of a decoded number, as close as a decoded value allows."""
    return repr(value) if type(value) is float else str(value)


def compile_wildcard(text: str) -> re.Pattern[str]:
    """Compile a validated wildcard expression (``*`` any run, ``\\*``/``\\\\`` escapes)."""
    parts: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            parts.append(re.escape(text[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "*" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Exact:
    """Exact JSON value: string, number (5 == 5.0), true, false or null."""

    value: Any


@dataclass(frozen=True, slots=True)
class Prefix:
    text: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class Suffix:
    text: str
    ignore_case: bool = False


@dataclass(frozen=True, slots=True)
class EqualsIgnoreCase:
    text: str


@dataclass(frozen=True, slots=True)
class Wildcard:
    text: str
    regex: re.Pattern[str]


@dataclass(frozen=True, slots=True)
class Numeric:
    """A range over comparable keys; None bounds are open-ended."""

    low: int | None
    low_inclusive: bool
    high: int | None
    high_inclusive: bool


@dataclass(frozen=True, slots=True)
class Cidr:
    """Addresses of one IP version from ``low`` to ``high`` inclusive (as integers).

    Like event-ruler, the range starts at the address as written (host bits are not cleared:
    ``10.0.0.7/24`` covers ``10.0.0.7`` to ``10.0.0.255``).  Exact string patterns that are
    IP addresses also become single-address ranges, so other spellings of the same IPv6
    address match.
    """

    version: int
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class Exists:
    """``{"exists": true}``: any leaf value, null included."""


@dataclass(frozen=True, slots=True)
class AnythingBut:
    """``anything-but`` a string list, or a number list (``numeric`` set, compared by key)."""

    strings: frozenset[str]
    numbers: frozenset[int]


@dataclass(frozen=True, slots=True)
class AnythingButPrefix:
    """Every value except strings starting with one of ``texts``."""

    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AnythingButSuffix:
    """Every value except strings ending with one of ``texts``."""

    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AnythingButIgnoreCase:
    lowered: frozenset[str]


@dataclass(frozen=True, slots=True)
class AnythingButWildcard:
    """Every value except strings matching one of the wildcard expressions ``texts``."""

    texts: tuple[str, ...]
    regexes: tuple[re.Pattern[str], ...]


ValueTest = (
    Exact
    | Prefix
    | Suffix
    | EqualsIgnoreCase
    | Wildcard
    | Numeric
    | Cidr
    | Exists
    | AnythingBut
    | AnythingButPrefix
    | AnythingButSuffix
    | AnythingButIgnoreCase
    | AnythingButWildcard
)


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()

Cond = _Absent | tuple[ValueTest, ...]
Path = tuple[str, ...]
Conjunction = dict[Path, Cond]


def leaf_matches(test: ValueTest, value: Any) -> bool:
    """Whether one leaf value (str, int, float, bool or None) satisfies one value test.

    Written for clarity; the compiler builds faster, specialised closures with the same
    meaning, and the tests check the two against each other.
    """
    if type(value) is RawText:
        value = str(value)
    is_str = type(value) is str
    match test:
        case Exact(expected):
            if expected is None or type(expected) is bool:
                return value is expected
            if type(expected) is str:
                return is_str and value == expected
            if not is_number(value):
                return False
            a, b = number_key(expected), number_key(value)
            if a is not None and b is not None:
                return a == b
            return number_literal(expected) == number_literal(value)
        case Prefix(text, ignore_case):
            if not is_str:
                return False
            return bool(value.lower().startswith(text) if ignore_case else value.startswith(text))
        case Suffix(text, ignore_case):
            if not is_str:
                return False
            return bool(value.lower().endswith(text) if ignore_case else value.endswith(text))
        case EqualsIgnoreCase(text):
            return is_str and value.lower() == text
        case Wildcard(_, regex):
            return is_str and regex.fullmatch(value) is not None
        case Numeric(low, low_inc, high, high_inc):
            if not is_number(value):
                return False
            key = number_key(value)
            if key is None:
                return False
            if low is not None and (key < low or (key == low and not low_inc)):
                return False
            return high is None or key < high or (key == high and high_inc)
        case Cidr(version, low, high):
            if not is_str:
                return False
            ip = parse_ip(value)
            return ip is not None and ip.version == version and low <= int(ip) <= high
        case Exists():
            return True
        case AnythingBut(strings, numbers):
            if is_str:
                return value not in strings
            if is_number(value):
                key = number_key(value)
                return key is None or key not in numbers
            return True
        case AnythingButPrefix(texts):
            return not (is_str and any(value.startswith(t) for t in texts))
        case AnythingButSuffix(texts):
            return not (is_str and any(value.endswith(t) for t in texts))
        case AnythingButIgnoreCase(lowered):
            return not (is_str and value.lower() in lowered)
        case AnythingButWildcard(_, regexes):
            return not (is_str and any(r.fullmatch(value) for r in regexes))
    raise AssertionError(f"unknown value test {test!r}")
