"""``router schema`` and ``router validate`` agree: every configuration YAML of the
repository, and every spelling (snake_case, PascalCase, SAM properties) of the keys, is
accepted by both, and the shapes the validator refuses the schema refuses too."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from router.config import json_schema, load_config_text
from router.errors import ConfigErrors
from tests.config.test_sam import CASES as SAM_CASES
from tests.config.test_sam_events import CASES as SAM_EVENT_CASES

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = {"f": {"invoker": "python", "handler": "json:dumps"}}
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


def _schema_errors(doc: Any) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(doc)]


def _validator_accepts(text: str) -> bool:
    try:
        load_config_text(text, "t.yaml")
    except ConfigErrors:
        return False
    return True


def _repository_documents() -> list[tuple[str, str]]:
    """The configuration files, and the YAML blocks of README / docs that are whole
    configurations (their top-level keys are router, functions and mappings)."""
    tracked = subprocess.run(
        ["git", "ls-files", "*.yaml", "*.yml", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    out: list[tuple[str, str]] = []
    for name in tracked:
        text = (ROOT / name).read_text(encoding="utf-8")
        blocks = re.findall(r"```yaml\n(.*?)```", text, re.S) if name.endswith(".md") else [text]
        for i, block in enumerate(blocks):
            try:
                doc = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            if isinstance(doc, dict) and doc and set(doc) <= {"router", "functions", "mappings"}:
                out.append((f"{name}#{i}", block))
    return out


DOCUMENTS = _repository_documents()


def test_the_repository_has_configurations_to_compare() -> None:
    names = {name.split("#")[0] for name, _ in DOCUMENTS}
    assert "config/router.yaml" in names and "docs/configuration.md" in names


@pytest.mark.parametrize(("name", "text"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_what_the_validator_accepts_the_schema_accepts(name: str, text: str) -> None:
    # The validator also checks what no schema can (handlers import, variables are set,
    # paths exist): where it refuses for such a reason, there is nothing to compare.
    if _validator_accepts(text):
        assert _schema_errors(yaml.safe_load(text)) == [], name


def _with_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    return {"functions": FUNCTIONS, "mappings": [{"name": "m", "function": "f", **mapping}]}


KAFKA_SNAKE: dict[str, Any] = {
    "enabled": True,
    "batch_size": 50,
    "maximum_batching_window": 1,
    "starting_position": "TRIM_HORIZON",
    "filter_criteria": {"filters": [{"pattern": '{"value": {"k": ["v"]}}'}]},
    "maximum_retry_attempts": 3,
    "maximum_record_age": 3600,
    "bisect_batch_on_function_error": True,
    "function_response_types": ["ReportBatchItemFailures"],
    "parallelization_factor": 2,
    "destination_config": {"on_failure": {"destination": "table"}},
    "source": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"], "topics": ["t"]},
}
KAFKA_PASCAL = {
    "FunctionName": "f",
    "Enabled": True,
    "BatchSize": 50,
    "MaximumBatchingWindowInSeconds": 1,
    "StartingPosition": "TRIM_HORIZON",
    "FilterCriteria": {"Filters": [{"Pattern": '{"value": {"k": ["v"]}}'}]},
    "MaximumRetryAttempts": 3,
    "MaximumRecordAgeInSeconds": 3600,
    "BisectBatchOnFunctionError": True,
    "FunctionResponseTypes": ["ReportBatchItemFailures"],
    "ParallelizationFactor": 2,
    "DestinationConfig": {"OnFailure": {"Destination": "table"}},
    "source": {"type": "kafka", "bootstrap_servers": ["127.0.0.1:9092"], "topics": ["t"]},
}
SCHEDULE_ALIASES = {
    "source": {
        "type": "schedule",
        "ScheduleExpression": "cron(0 8 * * ? *)",
        "ScheduleExpressionTimezone": "Europe/Berlin",
        "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5},
        "Input": '{"k": 1}',
        "StartDate": "2026-01-01T00:00:00Z",
    },
    "MaximumEventAgeInSeconds": 600,
}


def _pascal_doc() -> dict[str, Any]:
    doc = _with_mapping({})
    mapping = doc["mappings"][0]
    del mapping["function"]
    mapping.update(KAFKA_PASCAL)
    return doc


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("snake_case keys", _with_mapping(KAFKA_SNAKE)),
    ("PascalCase keys", _pascal_doc()),
    (
        "PascalCase-only filter criteria",
        _with_mapping(
            {**KAFKA_SNAKE, "filter_criteria": None}
            | {"FilterCriteria": {"Filters": [{"Pattern": '{"value": {"k": ["v"]}}'}]}}
        ),
    ),
    ("schedule aliases", _with_mapping(SCHEDULE_ALIASES)),
    (
        "scaling config",
        _with_mapping(
            {
                "ScalingConfig": {"MaximumConcurrency": 5},
                "source": {"type": "sqs", "queue_url": "http://127.0.0.1:4566/123456789012/q"},
            }
        ),
    ),
    *[(f"SAM: {case[0]}", _with_mapping(case[1])) for case in (*SAM_CASES, *SAM_EVENT_CASES)],
]


@pytest.mark.parametrize(("doc",), [(d,) for _, d in ACCEPTED], ids=[n for n, _ in ACCEPTED])
def test_every_spelling_is_accepted_by_both(
    doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_CREDENTIALS", '{"username": "u", "password": "p"}')
    doc = {
        **doc,
        "mappings": [{k: v for k, v in m.items() if v is not None} for m in doc["mappings"]],
    }
    assert _validator_accepts(yaml.safe_dump(doc))
    assert _schema_errors(doc) == []


REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("an unknown key", _with_mapping({**KAFKA_SNAKE, "batchsize": 5})),
    ("one key in two spellings", _with_mapping({**KAFKA_SNAKE, "BatchSize": 5})),
    ("a wrong type", _with_mapping({**KAFKA_SNAKE, "batch_size": "five"})),
    (
        "an unknown source setting",
        _with_mapping({**KAFKA_SNAKE, "source": {**KAFKA_SNAKE["source"], "zzz": 1}}),
    ),
    (
        "an unknown schedule alias",
        _with_mapping({"source": {"type": "schedule", "ScheduleExpresion": "rate(1 hour)"}}),
    ),
    (
        "no function",
        {"functions": FUNCTIONS, "mappings": [{"name": "m", "source": KAFKA_SNAKE["source"]}]},
    ),
    ("no source at all", _with_mapping({"batch_size": 5})),
    ("an unknown router key", {"router": {"zzz": 1}}),
    ("a bad account id", {"router": {"account_id": "12"}}),
]


@pytest.mark.parametrize(("doc",), [(d,) for _, d in REFUSED], ids=[n for n, _ in REFUSED])
def test_a_bad_shape_is_refused_by_both(doc: dict[str, Any]) -> None:
    assert not _validator_accepts(yaml.safe_dump(doc))
    assert _schema_errors(doc) != []
