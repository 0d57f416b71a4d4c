"""Ruling records out on their raw bytes: never a record that would match."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from router.filters import compile_patterns
from router.filters.raw import MAX_NEEDLES, may_match
from router.filters.reference import patterns_match
from router.filters.view import decode_text
from tests.filters.test_differential import PATTERN_AND_EVENT, PATTERNS, SETTINGS


def needed(*patterns: Any) -> frozenset[bytes] | None:
    return compile_patterns(list(patterns)).needed_strings("value")


def test_exact_strings_prefixes_and_suffixes_are_needed() -> None:
    assert needed({"value": {"kind": ["refund", "order"]}}) == frozenset({b"refund", b"order"})
    assert needed({"value": {"a": {"b": [{"prefix": "ERR-"}]}}}) == frozenset({b"ERR-"})
    assert needed({"value": [{"suffix": ".png"}]}) == frozenset({b".png"})
    # One string is enough for a conjunction: the one whose shortest text is longest.
    assert needed({"value": {"k": ["x"], "region": ["eu-west-1"]}}) == frozenset({b"eu-west-1"})
    # Each $or branch is a conjunction of its own; a string holding another adds nothing.
    both = {"value": {"$or": [{"k": ["refund"]}, {"j": ["refund-late"]}]}}
    assert needed(both) == frozenset({b"refund"})


def test_nothing_is_needed_when_a_pattern_needs_no_string() -> None:
    numeric = {"value": {"n": [{"numeric": [">", 1]}]}}
    assert needed({"value": {"kind": ["refund"]}}, numeric) is None
    assert needed({"value": {"kind": ["refund", {"prefix": {"equals-ignore-case": "X"}}]}}) is None
    assert needed({"value": {"kind": [""]}}) is None
    assert needed({"value": {"kind": [{"anything-but": "x"}]}}) is None
    assert needed({"value": {"kind": [{"exists": False}]}}) is None
    assert needed({"key": ["a2V5"]}) is None  # not under value
    assert needed({"value": {"kind": ["caf\ufffd"]}}) is None
    assert compile_patterns([]).needed_strings("value") is None


def test_a_payload_without_the_strings_cannot_match() -> None:
    check = may_match({b"refund", b"order"})
    assert check(b'{"kind":"refund"}')
    assert check(b'{"kind":"invoice","note":"order"}')  # holds the text: decoded and matched
    assert not check(b'{"kind":"invoice"}')
    # An escape may spell anything: decoded.
    assert check(b'{"kind":"re\\u0066und"}')
    # Anything but bytes (a null value) is decoded as well.
    assert check(None)
    many = may_match({f"needle-{i}".encode() for i in range(MAX_NEEDLES + 1)})
    assert many(b"...needle-3...")
    assert not many(b"...needle...")
    assert many(b"needle\\")


def test_escaped_and_raw_text_payloads_still_match() -> None:
    patterns: list[dict[str, Any]] = [
        {"value": {"kind": ["refund"]}},
        {"value": [{"prefix": "refund"}]},
    ]
    matcher = compile_patterns(patterns)
    needed_here = matcher.needed_strings("value")
    assert needed_here is not None
    check = may_match(needed_here)
    for raw in [b'{"kind":"re\\u0066und"}', b"refund later", b'"refund"', b'{"kind":["refund"]}']:
        event = {"value": decode_text(raw)}
        assert patterns_match(patterns, event), raw
        assert check(raw), raw


JSON_SAFE = st.from_regex(r"[a-z\"\\\u00e9\u2603 -]{0,6}", fullmatch=True)


@settings(SETTINGS, max_examples=400)
@given(patterns=st.lists(PATTERNS, min_size=1, max_size=3), case=PATTERN_AND_EVENT)
def test_a_ruled_out_payload_never_matches(
    patterns: list[dict[str, Any]], case: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    # Patterns on the decoded value and events shaped like them: whenever the raw JSON is
    # ruled out, the reference evaluator says no pattern matches the decoded record.
    extra, event = case
    everything = [{"value": p} for p in [*patterns, extra]]
    strings = compile_patterns(everything).needed_strings("value")
    if strings is None:
        return
    raw = orjson.dumps(event)
    if not may_match(strings)(raw):
        assert not patterns_match(everything, {"value": decode_text(raw)})


@settings(SETTINGS, max_examples=300)
@given(text=JSON_SAFE, other=JSON_SAFE, plain=st.booleans())
def test_strings_that_need_escapes_are_never_ruled_out_wrongly(
    text: str, other: str, plain: bool
) -> None:
    # Quotes, backslashes and non-ASCII text, in JSON and as text that is not JSON.
    patterns: list[dict[str, Any]] = [
        {"value": {"k": [text or "x"]}},
        {"value": [{"prefix": text or "x"}]},
    ]
    strings = compile_patterns(patterns).needed_strings("value")
    assert strings is not None
    for value in [text, other, f"{other}{text}"]:
        raw = value.encode() if plain else orjson.dumps({"k": value})
        if not may_match(strings)(raw):
            assert not patterns_match(patterns, {"value": decode_text(raw)})
