"""``python -m router.filters.cli`` exit codes, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.filters.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_match_exits_0() -> None:
    result = run("--pattern", '{"a": [{"prefix": "x"}]}', "--event", '{"a": "xyz"}')
    assert result.returncode == 0
    assert result.stdout.strip() == "match"


def test_no_match_exits_1() -> None:
    result = run("--pattern", '{"a": ["x"]}', "--event", '{"a": "y"}')
    assert result.returncode == 1
    assert result.stdout.strip() == "no match"


def test_invalid_pattern_exits_2_with_reason_and_path() -> None:
    result = run("--pattern", '{"detail": {"state": "running"}}', "--event", "{}")
    assert result.returncode == 2
    assert "must be an object or an array" in result.stderr
    assert "detail" in result.stderr


@pytest.mark.parametrize("event", ["{", "not json", ""])
def test_invalid_event_json_exits_2(event: str) -> None:
    result = run("--pattern", '{"a": ["x"]}', "--event", event)
    assert result.returncode == 2
    assert "event is not valid JSON" in result.stderr


def test_files_with_at_prefix(tmp_path: Path) -> None:
    pattern = tmp_path / "pattern.json"
    event = tmp_path / "event.json"
    pattern.write_text(json.dumps({"n": [{"numeric": [">", 1]}]}), encoding="utf-8")
    event.write_text(json.dumps({"n": 2}), encoding="utf-8")
    assert run("--pattern", f"@{pattern}", "--event", f"@{event}").returncode == 0
    event.write_text(json.dumps({"n": 0}), encoding="utf-8")
    assert run("--pattern", f"@{pattern}", "--event", f"@{event}").returncode == 1


def test_unreadable_event_file_exits_2(tmp_path: Path) -> None:
    result = run("--pattern", '{"a": ["x"]}', "--event", f"@{tmp_path / 'missing.json'}")
    assert result.returncode == 2
    assert "cannot read event file" in result.stderr


def test_unreadable_pattern_file_exits_2(tmp_path: Path) -> None:
    result = run("--pattern", f"@{tmp_path / 'missing.json'}", "--event", "{}")
    assert result.returncode == 2
    assert "cannot read pattern file" in result.stderr


def test_missing_arguments_is_usage_error() -> None:
    result = run("--pattern", '{"a": ["x"]}')
    assert result.returncode == 2
    assert "router test-pattern" in result.stderr


def test_in_process_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    from router.filters.cli import test_pattern_main

    assert test_pattern_main(["--pattern", '{"a": [1]}', "--event", '{"a": 1.0}']) == 0
    assert capsys.readouterr().out.strip() == "match"
