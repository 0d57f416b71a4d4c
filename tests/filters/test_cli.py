"""``python -m router.filters.cli`` exit codes, run as a real subprocess."""

from __future__ import annotations

import base64
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


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


SQS_RECORD = {
    "messageId": "059f36b4",
    "body": '{"RequestCode": "BBBB", "RecordNumber": 10000}',
    "attributes": {"ApproximateReceiveCount": "1"},
    "eventSource": "aws:sqs",
}


def test_source_sqs_decodes_the_body() -> None:
    pattern = '{"body": {"RequestCode": ["BBBB"]}}'
    event = json.dumps(SQS_RECORD)
    assert run("--pattern", pattern, "--event", event, "--source", "sqs").returncode == 0
    # Without the source's view the body is a string, as the pattern engine alone sees it.
    assert run("--pattern", pattern, "--event", event).returncode == 1


def test_source_sqs_plain_body_only_matches_string_patterns() -> None:
    event = json.dumps({**SQS_RECORD, "body": "ERROR: disk full"})
    prefix = run(
        "--pattern", '{"body": [{"prefix": "ERROR"}]}', "--event", event, "--source", "sqs"
    )
    assert prefix.returncode == 0
    inside = '{"body": {"level": [{"exists": false}]}}'
    assert run("--pattern", inside, "--event", event, "--source", "sqs").returncode == 1


def test_source_kafka_decodes_the_value() -> None:
    record = {"topic": "t", "partition": 0, "offset": 1, "value": b64('{"kind": "order"}')}
    pattern = '{"value": {"kind": ["order"]}}'
    result = run("--pattern", pattern, "--event", json.dumps(record), "--source", "kafka")
    assert result.returncode == 0, result.stderr


def test_source_kinesis_and_dynamodb_views() -> None:
    record = {
        "kinesis": {"partitionKey": "p1", "data": b64('{"order": {"type": "buy"}}')},
        "eventSource": "aws:kinesis",
    }
    pattern = '{"partitionKey": ["p1"], "data": {"order": {"type": ["buy"]}}}'
    assert (
        run("--pattern", pattern, "--event", json.dumps(record), "--source", "kinesis").returncode
        == 0
    )
    stream = {"eventName": "INSERT", "dynamodb": {"Keys": {"PK": {"S": "DONATION#1"}}}}
    pattern = '{"eventName": ["INSERT"], "dynamodb": {"Keys": {"PK": {"S": [{"prefix": "DON"}]}}}}'
    assert (
        run("--pattern", pattern, "--event", json.dumps(stream), "--source", "dynamodb").returncode
        == 0
    )


def test_whole_lambda_event_is_tested_record_by_record() -> None:
    event = {"Records": [SQS_RECORD, {**SQS_RECORD, "body": '{"RequestCode": "AAAA"}'}]}
    pattern = '{"body": {"RequestCode": ["AAAA"]}}'
    result = run("--pattern", pattern, "--event", json.dumps(event), "--source", "sqs")
    assert result.returncode == 0
    assert result.stdout.splitlines() == ["record 0: no match", "record 1: match"]


def test_several_patterns_any_may_match() -> None:
    args = ["--pattern", '{"a": ["y"]}', "--pattern", '{"a": ["x"]}', "--event", '{"a": "y"}']
    assert run(*args).returncode == 0
    assert run(*args[:4], "--event", '{"a": "x"}').returncode == 0
    assert run(*args[:4], "--event", '{"a": "z"}').returncode == 1


def test_unknown_source_exits_2() -> None:
    result = run("--pattern", '{"a": ["x"]}', "--event", "{}", "--source", "carrier-pigeon")
    assert result.returncode == 2
    assert "no filter view for source type 'carrier-pigeon'" in result.stderr
    assert "sqs" in result.stderr


MAPPING_CONFIG = """\
functions:
  hello:
    invoker: python
    handler: router.examples.hello:handler
mappings:
  - name: orders
    function: hello
    source: {type: sqs, queue_url: "http://127.0.0.1:1/000000000000/orders"}
    filter_criteria:
      filters:
        - pattern: '{"body": {"RequestCode": ["BBBB"]}}'
        - pattern: '{"body": {"RecordNumber": [{"numeric": [">", 99999]}]}}'
"""


def test_mapping_takes_patterns_and_view_from_the_store(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(MAPPING_CONFIG, encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'router.db'}"
    applied = subprocess.run(
        [sys.executable, "-m", "router.cli", "apply", "--config", str(config), "--store", store],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    result = run("--mapping", "orders", "--store", store, "--event", json.dumps(SQS_RECORD))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["mapping orders: source type sqs, 2 patterns", "match"]
    other = json.dumps({**SQS_RECORD, "body": '{"RequestCode": "CCCC", "RecordNumber": 1}'})
    assert run("--mapping", "orders", "--store", store, "--event", other).returncode == 1
    missing = run("--mapping", "nope", "--store", store, "--event", "{}")
    assert missing.returncode == 2
    assert "no mapping named 'nope'" in missing.stderr
    both = run("--mapping", "orders", "--store", store, "--event", "{}", "--pattern", "{}")
    assert both.returncode == 2
