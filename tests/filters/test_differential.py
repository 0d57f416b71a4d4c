"""Property-based differential test: compiled matcher vs reference evaluator."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.filters import compile_patterns
from router.filters.compile import make_predicate
from router.filters.parse import load_pattern, parse_pattern
from router.filters.reference import patterns_match
from router.filters.scalar import integer_bounds, numeric_bounds, scalar_matcher
from router.filters.spec import FIVE_BILLION, number_key

KEYS = st.sampled_from(["a", "b", "c"])
SCALARS = st.sampled_from(
    [
        "x",
        "y",
        "xy",
        "yx",
        "",
        "X",
        "10.0.0.7",
        "10.200.0.1",
        "2001:db8::5",
        "2001:0db8:0:0:0:0:0:5",
        "a*b",
        0,
        1,
        1.0,
        5,
        -1,
        2.5,
        6e9,
        True,
        False,
        None,
    ]
)

VALUE_TESTS: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["x", "y", "", "X", "10.0.0.7", 0, 1, 5, -1, 2.5, 6e9, True, False, None]),
    st.sampled_from(
        [
            {"prefix": "x"},
            {"prefix": ""},
            {"prefix": {"equals-ignore-case": "X"}},
            {"suffix": "x"},
            {"suffix": {"equals-ignore-case": "Y"}},
            {"equals-ignore-case": "x"},
            {"wildcard": "x*"},
            {"wildcard": "*"},
            {"anything-but": "x"},
            {"anything-but": ["x", "y"]},
            {"anything-but": [1, 5]},
            {"anything-but": {"prefix": "x"}},
            {"anything-but": {"suffix": "y"}},
            {"anything-but": {"equals-ignore-case": ["X"]}},
            {"anything-but": {"wildcard": "*y"}},
            {"anything-but": {"wildcard": ["x*", "*y"]}},
            {"anything-but": {"prefix": ["x", "y"]}},
            {"anything-but": {"suffix": ["x", "yx"]}},
            {"anything-but": {"prefix": []}},
            {"anything-but": {"equals-ignore-case": "X"}},
            {"anything-but": 5},
            {"anything-but": [1, 2.5]},
            {"cidr": "10.0.0.0/8"},
            {"cidr": "2001:db8::/32"},
            {"numeric": [">=", 1, "<=", 2]},
            {"prefix": ""},
            {"suffix": ""},
            {"wildcard": "*x*"},
            {"numeric": [">", 0]},
            {"numeric": ["=", 1]},
            {"numeric": [">=", -1, "<", 5]},
            {"numeric": ["<=", 2.5]},
            {"cidr": "10.0.0.0/24"},
            {"exists": True},
            {"exists": False},
        ]
    ),
)

LEAF = st.lists(VALUE_TESTS, min_size=1, max_size=3)


def pattern_objects(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    value: st.SearchStrategy[Any] = (
        LEAF if depth == 0 else st.one_of(LEAF, pattern_objects(depth - 1))
    )
    obj = st.dictionaries(KEYS, value, min_size=1, max_size=3)
    if depth == 0:
        return obj
    with_or = st.builds(
        lambda base, alts: {**base, "$or": alts},
        st.dictionaries(KEYS, LEAF, max_size=2),
        st.lists(st.dictionaries(KEYS, value, min_size=1, max_size=2), min_size=2, max_size=3),
    )
    return st.one_of(obj, obj, with_or)


PATTERNS = pattern_objects(2)

EVENT_VALUES: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=3)
    ),
    max_leaves=10,
)
EVENTS = st.dictionaries(KEYS, EVENT_VALUES, max_size=3)


def _hints(tests: list[Any]) -> list[Any]:
    """Values likely to satisfy (or nearly satisfy) the tests: operands and variations."""
    hints: list[Any] = []
    for test in tests:
        if not isinstance(test, dict):
            hints.append(test)
            continue
        operand = next(iter(test.values()))
        while isinstance(operand, dict | list) and operand:
            operand = next(iter(operand.values())) if isinstance(operand, dict) else operand[-1]
        if isinstance(operand, str):
            hints.extend([operand, operand + "y", "y" + operand, operand.upper()])
        elif isinstance(operand, int | float) and not isinstance(operand, bool):
            hints.extend([operand, operand + 1, operand - 0.5])
    return hints


def _leaf_value(draw: st.DrawFn, tests: list[Any]) -> Any:
    shape = draw(st.integers(0, 9))
    hints = _hints(tests)
    if shape < 4 and hints:
        return draw(st.sampled_from(hints))
    if shape < 6:
        return draw(SCALARS)
    if shape < 9:
        return draw(st.lists(SCALARS, max_size=3))
    return draw(EVENT_VALUES)


@st.composite
def event_for(draw: st.DrawFn, pattern: dict[str, Any]) -> dict[str, Any]:
    """An event shaped like the pattern (so matches are frequent), with random deviations."""
    event: dict[str, Any] = draw(st.dictionaries(KEYS, EVENT_VALUES, max_size=1))
    for key, sub in pattern.items():
        if key == "$or":
            for alternative in sub:
                event.update(draw(event_for(alternative)))
            continue
        if draw(st.integers(0, 9)) == 0:
            continue  # leave the field out
        if isinstance(sub, dict):
            shape = draw(st.integers(0, 9))
            if shape < 6:
                event[key] = draw(event_for(sub))
            elif shape < 9:
                event[key] = draw(st.lists(event_for(sub), min_size=1, max_size=3))
            else:
                event[key] = draw(SCALARS)
        else:
            event[key] = _leaf_value(draw, sub)
    return event


PATTERN_AND_EVENT = PATTERNS.flatmap(lambda p: st.tuples(st.just(p), event_for(p)))

SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@SETTINGS
@given(case=PATTERN_AND_EVENT)
def test_single_pattern_agrees(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    pattern, event = case
    assert compile_patterns([pattern]).matches(event) is patterns_match([pattern], event)


@SETTINGS
@given(pattern=PATTERNS, event=EVENTS)
def test_single_pattern_agrees_on_unrelated_events(
    pattern: dict[str, Any], event: dict[str, Any]
) -> None:
    assert compile_patterns([pattern]).matches(event) is patterns_match([pattern], event)


@settings(SETTINGS, max_examples=80)
@given(patterns=st.lists(PATTERNS, min_size=1, max_size=4), case=PATTERN_AND_EVENT)
def test_pattern_sets_agree(
    patterns: list[dict[str, Any]], case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    # The event is shaped after one more pattern, hidden among the others.
    extra, event = case
    everything = [*patterns, extra, *patterns]
    assert compile_patterns(everything).matches(event) is patterns_match(everything, event)


@settings(SETTINGS, max_examples=40)
@given(
    patterns=st.lists(PATTERNS, min_size=10, max_size=30),
    cases=st.lists(PATTERN_AND_EVENT, min_size=5, max_size=10),
)
def test_large_pattern_sets_agree(
    patterns: list[dict[str, Any]], cases: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    # Many patterns share fields, so their conditions share the per-field indexes.
    everything = [*patterns, *(p for p, _ in cases)]
    matcher = compile_patterns(everything)
    for _, event in cases:
        assert matcher.matches(event) is patterns_match(everything, event)


@settings(SETTINGS, max_examples=300)
@given(patterns=st.lists(PATTERNS, min_size=1, max_size=3), case=PATTERN_AND_EVENT)
def test_generated_matcher_agrees_where_it_answers(
    patterns: list[dict[str, Any]], case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    # The straight-line matcher (plain values at every field) answers alone when it can;
    # where it does, its answer is the reference's.
    extra, event = case
    everything = [*patterns, extra]
    conjunctions = [c for p in everything for c in parse_pattern(load_pattern(p))]
    generated = scalar_matcher(conjunctions, make_predicate)
    if generated is None:
        return
    found = generated(event)
    if found is not None:
        assert found is patterns_match(everything, event)


@settings(SETTINGS, max_examples=150)
@given(
    patterns=st.lists(PATTERNS, min_size=1, max_size=4),
    cases=st.lists(PATTERN_AND_EVENT, min_size=2, max_size=12),
)
def test_generated_matcher_agrees_over_a_stream_of_events(
    patterns: list[dict[str, Any]], cases: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    # One generated matcher sees many events in a row, so the conjunction it tries first
    # (the one that held most lately) changes as it goes; every answer it gives is still
    # the reference's. Events are sent twice, so a hint set by an event meets it again.
    everything = [*patterns, *(p for p, _ in cases)]
    conjunctions = [c for p in everything for c in parse_pattern(load_pattern(p))]
    generated = scalar_matcher(conjunctions, make_predicate)
    if generated is None:
        return
    for _, event in [*cases, *cases]:
        found = generated(event)
        if found is not None:
            assert found is patterns_match(everything, event)


def test_a_stream_matching_one_pattern_is_tried_against_it_first() -> None:
    # The last pattern holds for every record but comes last in order: after a few records
    # it is the matcher's first try, and the answers stay exact.
    patterns: list[dict[str, Any]] = [
        {"kind": ["order"], "amount": [{"numeric": [">", 50]}]},
        {"kind": ["refund"]},
        {"amount": [{"numeric": [">=", 0]}]},
    ]
    conjunctions = [c for p in patterns for c in parse_pattern(load_pattern(p))]
    generated = scalar_matcher(conjunctions, make_predicate)
    assert generated is not None
    kinds = ["order", "refund", "invoice"]
    events = [{"kind": kinds[i % 3], "amount": i % 100} for i in range(300)]
    events += [{"kind": "invoice", "amount": -1}, {"kind": "order", "amount": 2.5}]
    for event in events:
        assert generated(event) is patterns_match(patterns, event)
    hint = generated.__globals__["H"][0]
    assert hint is not None
    assert hint({"kind": "invoice", "amount": 7}) is True


@settings(SETTINGS, max_examples=200)
@given(
    low=st.integers(-(6 * 10**9), 6 * 10**9),
    width=st.integers(0, 10**4),
    inclusive=st.tuples(st.booleans(), st.booleans()),
    values=st.lists(st.integers(-(6 * 10**9), 6 * 10**9), max_size=20),
    near=st.lists(st.integers(-3, 3), max_size=10),
)
def test_integer_bounds_are_those_of_number_key(
    low: int, width: int, inclusive: tuple[bool, bool], values: list[int], near: list[int]
) -> None:
    # The generated matcher compares integers with bounds instead of number keys: for any
    # range of keys, an integer is within the bounds exactly when its key is in the range.
    lo, hi = numeric_bounds(
        number_key(low) if -FIVE_BILLION <= low <= FIVE_BILLION else None,
        inclusive[0],
        number_key(low + width) if -FIVE_BILLION <= low + width <= FIVE_BILLION else None,
        inclusive[1],
    )
    first, last = integer_bounds(lo, hi)
    for v in [*values, *(low + d for d in near), *(low + width + d for d in near), first, last]:
        key = number_key(v)
        assert (first <= v <= last) is (key is not None and lo <= key <= hi)
