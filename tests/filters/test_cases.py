"""Table-driven cases (tests/filters/cases/*.jsonl) through the compiled and reference engines.

Each line: ``{"name", "pattern", "event", "expect"}`` with ``expect`` one of ``match``,
``no match`` or ``invalid``; invalid cases may add ``error`` (a substring of the message) and
``path`` (the exact ``PatternError.path``).  A pattern given as a JSON string is passed as
text (so duplicate keys and invalid JSON can be expressed); otherwise as a mapping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from router.filters import PatternError, compile_patterns
from router.filters.reference import patterns_match

CASES_DIR = Path(__file__).parent / "cases"


def _load() -> list[Any]:
    params = []
    for path in sorted(CASES_DIR.glob("*.jsonl")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            case = json.loads(line)
            case_id = f"{path.stem}:{lineno}:{case['name']}"
            params.append(pytest.param(case, id=case_id))
    return params


CASES = _load()


def test_there_are_several_hundred_cases() -> None:
    assert len(CASES) >= 400


@pytest.mark.parametrize("case", CASES)
def test_case(case: dict[str, Any]) -> None:
    pattern, event, expect = case["pattern"], case["event"], case["expect"]
    assert expect in ("match", "no match", "invalid")
    if expect == "invalid":
        with pytest.raises(PatternError) as info:
            compile_patterns([pattern])
        assert info.value.path.startswith("[0]")
        assert "Event pattern is not valid" in str(info.value)
        if "error" in case:
            assert case["error"] in str(info.value)
        if "path" in case:
            assert info.value.path == case["path"]
        with pytest.raises(PatternError):
            patterns_match([pattern], event)
        return
    wanted = expect == "match"
    assert compile_patterns([pattern]).matches(event) is wanted, "compiled matcher"
    assert patterns_match([pattern], event) is wanted, "reference evaluator"
    # The same pattern among unrelated ones must give the same answer (index correctness).
    crowd: list[Any] = [{"zz-unrelated": [str(i)]} for i in range(20)]
    assert compile_patterns([*crowd, pattern, *crowd]).matches(event) is wanted, "in a crowd"
