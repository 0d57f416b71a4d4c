"""The public interface of ``router.filters``."""

from __future__ import annotations

import json

import pytest

from router.filters import Matcher, PatternError, compile_patterns


def test_empty_sequence_matches_everything() -> None:
    matcher = compile_patterns([])
    assert isinstance(matcher, Matcher)
    assert matcher.matches({}) and matcher.matches({"a": 1}) and matcher.matches([])


def test_any_pattern_may_match() -> None:
    matcher = compile_patterns(['{"a": ["x"]}', {"b": [1]}, b'{"c": [true]}'])
    assert matcher.matches({"a": "x"})
    assert matcher.matches({"b": 1.0})
    assert matcher.matches({"c": True})
    assert not matcher.matches({"a": "y", "b": 2, "c": False})


def test_pattern_error_is_value_error_with_index_and_key_path() -> None:
    with pytest.raises(PatternError) as info:
        compile_patterns([{"a": ["x"]}, {"detail": {"count": [{"numeric": [">", "1"]}]}}])
    error = info.value
    assert isinstance(error, ValueError)
    assert error.path == "[1].detail.count"
    assert "Value of > must be numeric" in str(error)
    assert "[1].detail.count" in str(error)


def test_pattern_error_for_non_json_text() -> None:
    with pytest.raises(PatternError) as info:
        compile_patterns(['{"a": '])
    assert info.value.path == "[0]"
    assert "not valid JSON" in str(info.value)


def test_a_single_pattern_is_not_a_sequence_of_patterns() -> None:
    with pytest.raises(TypeError):
        compile_patterns('{"a": ["x"]}')


def test_or_path_in_error() -> None:
    with pytest.raises(PatternError) as info:
        compile_patterns([{"detail": {"$or": [{"a": [1]}]}}])
    assert info.value.path == "[0].detail.$or"


def test_many_patterns_each_match_their_own_events() -> None:
    patterns = [
        {"body": {"customer": [f"c{i}"], "total": [{"numeric": [">", i]}]}} for i in range(300)
    ]
    patterns += [{"body": {"sku": [{"prefix": f"SKU-{i}-"}]}} for i in range(100)]
    matcher = compile_patterns([json.dumps(p) for p in patterns])
    assert matcher.matches({"body": {"customer": "c250", "total": 251}})
    assert not matcher.matches({"body": {"customer": "c250", "total": 250}})
    assert matcher.matches({"body": {"sku": ["x", "SKU-42-blue"]}})
    assert not matcher.matches({"body": {"sku": "SKU-420"}})
    assert not matcher.matches({"body": {"customer": "c1000", "total": 10**6}})


def test_matcher_does_not_modify_the_event() -> None:
    event = {"a": {"b.c": 1}, "d": [{"e": 2}]}
    snapshot = json.dumps(event)
    compile_patterns([{"a": {"b": {"c": [1]}}, "d": {"e": [2]}}]).matches(event)
    assert json.dumps(event) == snapshot


def test_many_suffix_and_wildcard_patterns() -> None:
    patterns: list[dict[str, object]] = [{"key": [{"suffix": f".{i}.png"}]} for i in range(50)]
    patterns += [{"key": [{"wildcard": f"logs/{i}/*.gz"}]} for i in range(50)]
    patterns += [{"key": [{"wildcard": f"*-{i}.tmp"}]} for i in range(50)]
    patterns += [{"key": [{"suffix": {"equals-ignore-case": f".{i}.JPG"}}]} for i in range(50)]
    matcher = compile_patterns(patterns)
    assert matcher.matches({"key": "a/b.7.png"})
    assert not matcher.matches({"key": "a/b.70.png"})
    assert matcher.matches({"key": "logs/12/x/y.gz"})
    assert not matcher.matches({"key": "logs/12/x/y.zip"})
    assert matcher.matches({"key": "tmp/file-33.tmp"})
    assert matcher.matches({"key": "photo.9.jpg"})
    assert not matcher.matches({"key": "photo.99.jpg"})
    assert matcher.matches({"key": ["nope", "logs/3/a.gz"]})


def test_many_numeric_only_patterns() -> None:
    patterns = [{"t": [{"numeric": [">=", i * 10, "<", i * 10 + 5]}]} for i in range(300)]
    patterns += [{"t": [{"numeric": ["=", -i - 0.5]}]} for i in range(100)]
    patterns += [{"u": [{"numeric": ["<", -1000]}, {"numeric": [">", 1e9]}]}]
    matcher = compile_patterns(patterns)
    assert matcher.matches({"t": 1234})
    assert not matcher.matches({"t": 1236})
    assert matcher.matches({"t": 0})
    assert not matcher.matches({"t": 2995})
    assert matcher.matches({"t": -7.5})
    assert not matcher.matches({"t": -7.25})
    assert matcher.matches({"t": [7, 2990]})
    assert not matcher.matches({"t": "1234"})
    assert matcher.matches({"u": 2e9})
    assert not matcher.matches({"u": 0})
    assert not matcher.matches({"u": 6e9})
