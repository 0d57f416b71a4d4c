"""Validation of event patterns and their expansion into conjunctions.

Mirrors the checks of AWS event-ruler's ``JsonRuleCompiler`` (which EventBridge and Lambda use),
with messages modelled on its ``InvalidEventPatternException`` texts, plus the key path where
the problem is.  Output: a list of :data:`~router.filters.spec.Conjunction` (``$or`` expanded).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from router.filters.limits import (
    TOO_COMPLEX_MESSAGE,
    nesting_depth,
    nesting_message,
    too_complex_path,
)
from router.filters.spec import (
    ABSENT,
    MAX_NESTING_DEPTH,
    MAX_PATTERN_CHARS,
    NUMBER_RANGE_MESSAGE,
    AnythingBut,
    AnythingButIgnoreCase,
    AnythingButPrefix,
    AnythingButSuffix,
    AnythingButWildcard,
    Cidr,
    Cond,
    Conjunction,
    EqualsIgnoreCase,
    Exact,
    Exists,
    Numeric,
    Path,
    Prefix,
    Suffix,
    ValueTest,
    Wildcard,
    compile_wildcard,
    is_number,
    number_key,
    parse_ip,
)

OR_KEY = "$or"
# Event-ruler refuses these as field names inside "$or" alternatives: its operators, numeric
# comparators, and names it keeps for future operators.
RESERVED_IN_OR = frozenset(
    {
        "anything-but",
        "cidr",
        "equals-ignore-case",
        "exactly",
        "exists",
        "numeric",
        "prefix",
        "suffix",
        "wildcard",
        "=",
        "<",
        "<=",
        ">",
        ">=",
        "regex",
        "not-wildcard",
        "not-equals-ignore-case",
        "date-after",
        "date-on-or-after",
        "date-before",
        "date-on-or-before",
        "in-date-range",
        "ip-address-in-range",
        "ip-address-not-in-range",
    }
)
# Guard against patterns whose "$or" product explodes; AWS bounds this through rule size.
MAX_CONJUNCTIONS = 1024


class PatternError(ValueError):
    """An event pattern AWS would reject.

    ``path`` names where the problem is: ``[i]`` for the i-th pattern of the list given to
    :func:`~router.filters.compile_patterns`, followed by the dotted key path inside it.
    """

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        where = f" (at {path})" if path else ""
        super().__init__(f"Event pattern is not valid. Reason: {reason}{where}")


def _fail(reason: str, path: Path) -> NoReturn:
    raise PatternError(reason, ".".join(path))


def _reject_constant(name: str) -> NoReturn:
    raise PatternError(f"Unrecognized token '{name}': was expecting a JSON value")


def _size_message(size: int) -> str:
    # The wording of Lambda's API for FilterCriteria.Filters[].Pattern.
    return (
        f"Member must have length less than or equal to {MAX_PATTERN_CHARS} "
        f"(this pattern has {size} characters)"
    )


def load_pattern(pattern: str | bytes | Mapping[str, Any]) -> Any:
    """Decode a JSON pattern (duplicate keys: the last one wins, like the AWS parser).

    Checks the limits that apply to the pattern as a whole: at most
    :data:`~router.filters.spec.MAX_PATTERN_CHARS` characters (a mapping is measured as
    compact JSON) and at most :data:`~router.filters.spec.MAX_NESTING_DEPTH` levels.
    """
    if isinstance(pattern, bytes | bytearray):
        try:
            pattern = bytes(pattern).decode("utf-8")
        except UnicodeDecodeError as e:
            raise PatternError(f"pattern is not valid UTF-8: {e}") from e
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            raise PatternError(_size_message(len(pattern)))
        try:
            decoded = json.loads(pattern, parse_constant=_reject_constant)
        except PatternError:
            raise
        except RecursionError:
            raise PatternError(nesting_message(MAX_NESTING_DEPTH + 1)) from None
        except ValueError as e:
            raise PatternError(f"pattern is not valid JSON: {e}") from e
    else:
        decoded = pattern
    depth = nesting_depth(decoded)
    if depth > MAX_NESTING_DEPTH:
        raise PatternError(nesting_message(depth))
    if not isinstance(pattern, str):
        try:
            text = json.dumps(decoded, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError):
            text = ""  # not JSON data: parse_pattern says what is wrong, and where
        if len(text) > MAX_PATTERN_CHARS:
            raise PatternError(_size_message(len(text)))
    return decoded


def parse_pattern(pattern: Any) -> list[Conjunction]:
    """Validate one decoded pattern and return its conjunctions (alternatives)."""
    if not isinstance(pattern, Mapping):
        raise PatternError("Filter is not an object")
    conjunctions: list[Conjunction] = [{}]
    conjunctions = _parse_object(pattern, (), conjunctions, in_or=False)
    conjunctions = _split_mixed_absence(conjunctions)
    crowded = too_complex_path(conjunctions)
    if crowded is not None:
        _fail(TOO_COMPLEX_MESSAGE, crowded)
    return conjunctions


def _parse_object(
    obj: Mapping[Any, Any], path: Path, rules: list[Conjunction], *, in_or: bool
) -> list[Conjunction]:
    if not obj:
        _fail("Empty objects are not allowed", path)
    for key, value in obj.items():
        if not isinstance(key, str):
            _fail(f"field name {key!r} is not a string", path)
        if key == OR_KEY:
            rules = _parse_or(value, path, rules)
            continue
        if in_or and key in RESERVED_IN_OR:
            _fail(f"{key} is Ruler reserved fieldName which cannot be used inside $or.", path)
        # A dotted key is the same field as the nested form, as in event-ruler.
        child = (*path, *key.split("."))
        if isinstance(value, Mapping):
            rules = _parse_object(value, child, rules, in_or=in_or)
        elif isinstance(value, list):
            cond = _parse_values(value, child)
            for rule in rules:
                rule.pop(child, None)  # re-insert so the latest duplicate wins in order too
                rule[child] = cond
        else:
            _fail(f'"{key}" must be an object or an array', path)
    return rules


def _parse_or(value: Any, path: Path, rules: list[Conjunction]) -> list[Conjunction]:
    where = (*path, OR_KEY)
    if not isinstance(value, list):
        _fail("It must be an Array followed with $or.", where)
    if len(value) < 2:
        _fail("There must have at least 2 Objects in $or relationship.", where)
    result: list[Conjunction] = []
    for i, alternative in enumerate(value):
        if not isinstance(alternative, Mapping):
            _fail("Only JSON object is allowed in array of $or relationship.", (*where, str(i)))
        branch = [dict(rule) for rule in rules]
        result.extend(_parse_object(alternative, path, branch, in_or=True))
        if len(result) > MAX_CONJUNCTIONS:
            _fail(f"$or expands to more than {MAX_CONJUNCTIONS} alternatives", where)
    return result


def _split_mixed_absence(rules: list[Conjunction]) -> list[Conjunction]:
    """``[{"exists": false}, "x"]`` means absent OR "x": split it into two conjunctions."""
    out: list[Conjunction] = []
    for rule in rules:
        pending = [rule]
        for path, cond in rule.items():
            if not isinstance(cond, tuple) or not any(t is _ABSENT_MARK for t in cond):
                continue
            rest = tuple(t for t in cond if t is not _ABSENT_MARK)
            nxt: list[Conjunction] = []
            for r in pending:
                nxt.append({**r, path: ABSENT})
                if rest:
                    nxt.append({**r, path: rest})
            pending = nxt
        out.extend(pending)
    return out


# Placeholder for {"exists": false} inside a value list; resolved by _split_mixed_absence.
_ABSENT_MARK: Any = Exists()


def _parse_values(values: list[Any], path: Path) -> Cond:
    if not values:
        _fail("Empty arrays are not allowed", path)
    tests: list[ValueTest] = []
    only_absent = True
    for v in values:
        if isinstance(v, Mapping):
            test = _parse_operator(v, path)
            if test is ABSENT:
                tests.append(_ABSENT_MARK)
                continue
            assert not isinstance(test, type(ABSENT))
            tests.append(test)
        elif isinstance(v, str):
            tests.extend(_exact_string(v))
        elif v is None or isinstance(v, bool):
            tests.append(Exact(v))
        elif is_number(v):
            if isinstance(v, float) and math.isnan(v):
                _fail("Match value must be String, number, true, false, or null", path)
            tests.append(Exact(v))
        else:
            _fail("Match value must be String, number, true, false, or null", path)
        only_absent = False
    if only_absent:
        return ABSENT
    return tuple(tests)


def _single(obj: Mapping[Any, Any], path: Path) -> tuple[str, Any]:
    if not obj:
        _fail("Match expression name not found", path)
    if len(obj) > 1:
        _fail("Only one key allowed in match expression", path)
    ((name, operand),) = obj.items()
    return str(name), operand


def _parse_operator(obj: Mapping[Any, Any], path: Path) -> ValueTest | Any:
    name, operand = _single(obj, path)
    if name in ("prefix", "suffix"):
        ignore_case = False
        if isinstance(operand, Mapping):
            inner, operand = _single(operand, path)
            if inner != "equals-ignore-case":
                _fail(f"Unsupported {name} pattern: {inner}", path)
            ignore_case = True
        if not isinstance(operand, str):
            _fail(f"{name} match pattern must be a string", path)
        text = operand.lower() if ignore_case else operand
        return Prefix(text, ignore_case) if name == "prefix" else Suffix(text, ignore_case)
    if name == "equals-ignore-case":
        if not isinstance(operand, str):
            _fail("equals-ignore-case match pattern must be a string", path)
        return EqualsIgnoreCase(operand.lower())
    if name == "wildcard":
        if not isinstance(operand, str):
            _fail("wildcard match pattern must be a string", path)
        return Wildcard(operand, _wildcard(operand, path))
    if name == "exists":
        if type(operand) is not bool:
            _fail("exists match pattern must be either true or false.", path)
        return Exists() if operand else ABSENT
    if name == "numeric":
        return _parse_numeric(operand, path)
    if name == "cidr":
        return _parse_cidr(operand, path)
    if name == "anything-but":
        return _parse_anything_but(operand, path)
    _fail(f"Unrecognized match type {name}", path)


def _wildcard(text: str, path: Path) -> Any:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or text[i + 1] not in "*\\":
                _fail(f"Invalid escape character at pos {i}", path)
            i += 2
            continue
        if ch == "*" and i + 1 < len(text) and text[i + 1] == "*":
            _fail(f"Consecutive wildcard characters at pos {i + 1}", path)
        i += 1
    return compile_wildcard(text)


def _range_key(value: Any, op: str, path: Path) -> int:
    if not is_number(value):
        _fail(f"Value of {op} must be numeric", path)
    key = number_key(value)
    if key is None:
        _fail(NUMBER_RANGE_MESSAGE, path)
    return key


def _parse_numeric(operand: Any, path: Path) -> Numeric:
    if not isinstance(operand, list):
        _fail("Value of numeric must be an array.", path)
    if not operand or not isinstance(operand[0], str):
        shown = json.dumps(operand[0]) if operand else "]"
        _fail(f"Invalid member in numeric match: {shown}", path)
    op = operand[0]
    if op not in ("=", "<", "<=", ">", ">="):
        _fail(f"Unrecognized numeric range operator: {op}", path)
    # event-ruler names "=" "equals" in this one message.
    op_name = "equals" if op == "=" else op
    if len(operand) < 2:
        _fail(f"Value of {op_name} must be numeric", path)
    key = _range_key(operand[1], op_name, path)
    if op in ("=", "<", "<="):
        if len(operand) > 2:
            _fail("Too many elements in numeric expression", path)
        if op == "=":
            return Numeric(key, True, key, True)
        return Numeric(None, False, key, op == "<=")
    if len(operand) == 2:
        return Numeric(key, op == ">=", None, False)
    top_op = operand[2]
    if not isinstance(top_op, str):
        _fail(f"Bad value in numeric range: {json.dumps(top_op)}", path)
    if top_op not in ("<", "<="):
        _fail(f"Bad numeric range operator: {top_op}", path)
    if len(operand) < 4:
        _fail(f"Value of {top_op} must be numeric", path)
    top = _range_key(operand[3], top_op, path)
    if len(operand) > 4:
        _fail("Too many terms in numeric range expression", path)
    if key >= top:
        _fail("Bottom must be less than top", path)
    return Numeric(key, op == ">=", top, top_op == "<=")


def _parse_cidr(operand: Any, path: Path) -> Cidr:
    # Checks and messages of event-ruler's CIDR.cidr(); note /32 and /128 are refused there.
    if not isinstance(operand, str):
        _fail("cidr match pattern must be a string", path)
    parts = operand.split("/")
    if len(parts) != 2:
        _fail(f"Malformed CIDR, one '/' required: {operand}", path)
    address, bits_text = parts
    try:
        bits = int(bits_text)
    except ValueError:
        _fail(f"Malformed CIDR, mask bits must be an integer: {operand}", path)
    if bits < 0:
        _fail(f"Malformed CIDR, mask bits must not be negative: {operand}", path)
    ip = parse_ip(address)
    if ip is None:
        _fail(f"Invalid IP address: {address}", path)
    width = 32 if ip.version == 4 else 128
    if bits >= width:
        _fail(f"IPv{ip.version} mask bits must be < {width}: {operand}", path)
    low = int(ip)
    return Cidr(ip.version, low, low | ((1 << (width - bits)) - 1))


def _exact_string(text: str) -> tuple[ValueTest, ...]:
    """An exact string; one that is an IP address also matches other spellings of it."""
    ip = parse_ip(text) if (":" in text or text[:1].isdigit()) else None
    if ip is None:
        return (Exact(text),)
    return (Exact(text), Cidr(ip.version, int(ip), int(ip)))


_ANYTHING_BUT_SETS = ("equals-ignore-case", "prefix", "suffix", "wildcard")


def _parse_anything_but(operand: Any, path: Path) -> ValueTest:
    if isinstance(operand, Mapping):
        if not operand:
            _fail("Anything-But expression name not found", path)
        name, inner = next(iter(operand.items()))
        if name not in _ANYTHING_BUT_SETS:
            _fail(f"Unsupported anything-but pattern: {name}", path)
        if len(operand) > 1:
            _fail("Too many elements in numeric expression", path)  # event-ruler's wording
        return _parse_anything_but_set(str(name), inner, path)
    if isinstance(operand, list):
        items = operand
    elif isinstance(operand, str) or is_number(operand):
        items = [operand]
    else:
        _fail("Value of anything-but must be an array or single string/number value.", path)
    strings: set[str] = set()
    numbers: set[int] = set()
    for item in items:
        if isinstance(item, str):
            strings.add(item)
        elif is_number(item):
            key = number_key(item)
            if key is None:
                _fail(NUMBER_RANGE_MESSAGE, path)
            numbers.add(key)
        else:
            _fail("Inside anything but list, start|null|boolean is not supported.", path)
    if bool(strings) == bool(numbers):
        _fail(
            "Inside anything but list, either all values are number or string, "
            "mixed type is not supported",
            path,
        )
    return AnythingBut(frozenset(strings), frozenset(numbers))


def _parse_anything_but_set(name: str, inner: Any, path: Path) -> ValueTest:
    """``anything-but`` with ``prefix``/``suffix``/``equals-ignore-case``/``wildcard``: a string
    or a list of strings (an empty list excludes nothing, as in event-ruler)."""
    if isinstance(inner, list):
        items = inner
    elif isinstance(inner, str) or is_number(inner):
        items = [inner]
    else:
        _fail("Value of anything-but must be an array or single string/number value.", path)
    if not all(isinstance(s, str) for s in items):
        if name == "equals-ignore-case":
            _fail(
                "Inside anything-but/equals-ignore-case list, "
                "number|start|null|boolean is not supported.",
                path,
            )
        if name == "wildcard":
            _fail("wildcard match pattern must be a string", path)
        _fail("prefix/suffix match pattern must be a string", path)
    texts = tuple(dict.fromkeys(items))  # duplicates removed, order kept
    if name in ("prefix", "suffix"):
        if "" in texts:
            _fail("Null prefix/suffix not allowed", path)
        return AnythingButPrefix(texts) if name == "prefix" else AnythingButSuffix(texts)
    if name == "equals-ignore-case":
        return AnythingButIgnoreCase(frozenset(s.lower() for s in texts))
    return AnythingButWildcard(texts, tuple(_wildcard(s, path) for s in texts))
