"""Rows <-> configs: the round trip, and a row edited in SQL checked with the YAML rules."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from router.config import load_config_text, mapping_from_row, row_from_mapping
from router.config.convert import RouterSettings
from router.config.rows import split_config_hash
from router.errors import ConfigErrors
from router.models import MappingConfig, MappingRow

pytestmark = pytest.mark.usefixtures("test_plugins")

CONFIG = textwrap.dedent("""\
    functions:
      echo: {invoker: python, handler: app:handle}
    mappings:
      - name: orders
        function: echo
        enabled: false
        source: {type: kafka, bootstrap_servers: "127.0.0.1:9092", topics: [orders]}
        batch_size: 50
        starting_position: AT_TIMESTAMP
        starting_position_timestamp: 2024-05-01T10:00:00+02:00
        filter_criteria:
          filters:
            - pattern: {value: {kind: [order]}}
            - pattern: '{"value": {"kind": [{"prefix": "refund"}]}}'
        maximum_retry_attempts: 5
        maximum_record_age: 600
        bisect_batch_on_function_error: true
        function_response_types: [ReportBatchItemFailures]
        destination_config:
          on_failure: {destination: "kafka://dlq"}
          on_success: {type: http, url: "https://example.com/ok", timeout: 2}
      - name: inbox
        function: echo
        source: {type: directory, path: ./inbox}
      - name: queue
        function: echo
        source: {type: sqs, queue_url: "http://127.0.0.1:4566/000000000000/q"}
        ScalingConfig: {MaximumConcurrency: 4}
    """)


def mappings() -> dict[str, MappingConfig]:
    pytest.importorskip("router.filters")
    return {m.name: m for m in load_config_text(CONFIG).mappings}


@pytest.mark.parametrize("name", ["orders", "inbox", "queue"])
def test_row_round_trip(name: str) -> None:
    m = mappings()[name]
    row = row_from_mapping(m)
    assert row.uuid and row.name == name and row.origin == "yaml"
    back = mapping_from_row(row, {"echo": None})  # type: ignore[dict-item]
    assert back == dataclasses.replace(m, uuid=row.uuid)
    # The same config always gives the same hash; the uuid is not part of it.
    assert row_from_mapping(dataclasses.replace(m, uuid="x")).config_hash == row.config_hash


def test_row_columns_are_what_an_operator_reads() -> None:
    row = row_from_mapping(mappings()["orders"])
    assert row.function_name == "echo" and row.source_type == "kafka"
    assert row.source_config == {
        "bootstrap_servers": "127.0.0.1:9092",
        "topics": ["orders"],
        "sasl_password": None,
    }
    assert row.filter_criteria == {
        "Filters": [
            {"Pattern": '{"value":{"kind":["order"]}}'},
            {"Pattern": '{"value": {"kind": [{"prefix": "refund"}]}}'},
        ]
    }
    assert row.destination_config == {
        "on_failure": {"destination": "kafka://dlq"},
        "on_success": {"type": "http", "url": "https://example.com/ok", "timeout": 2.0},
    }
    assert row.function_response_types == ["ReportBatchItemFailures"]
    assert row.starting_position_timestamp is not None
    assert row.starting_position_timestamp.isoformat() == "2024-05-01T08:00:00+00:00"
    assert (row.enabled, split_config_hash(row.config_hash)[1]) == (False, False)


def test_config_hash_ignores_enabled_but_records_it() -> None:
    m = mappings()["inbox"]
    on = row_from_mapping(m)
    off = row_from_mapping(dataclasses.replace(m, enabled=False))
    assert split_config_hash(on.config_hash) == (split_config_hash(off.config_hash)[0], True)
    assert split_config_hash(off.config_hash)[1] is False
    bigger = row_from_mapping(dataclasses.replace(m, maximum_retry_attempts=1))
    assert split_config_hash(bigger.config_hash)[0] != split_config_hash(on.config_hash)[0]


def _errors(row: MappingRow, **kwargs: object) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        mapping_from_row(row, **kwargs)  # type: ignore[arg-type]
    return str(info.value).splitlines()


def test_sql_edits_are_checked_with_the_yaml_rules() -> None:
    row = row_from_mapping(mappings()["orders"])
    row.batch_size = 0
    assert _errors(row) == [
        "event_source_mappings[name=orders].batch_size: must be between 1 and 10000 for "
        "source type 'kafka', got 0"
    ]
    row = row_from_mapping(mappings()["orders"])
    row.batch_size = 20_000
    row.source_config = {**row.source_config, "topicz": ["x"]}
    row.destination_config = {"on_failure": {"destination": "mailto:me"}}
    assert _errors(row) == [
        "event_source_mappings[name=orders].source_config.topicz: unknown key 'topicz'; "
        "did you mean 'topics'?",
    ]
    row.source_config = {k: v for k, v in row.source_config.items() if k != "topicz"}
    assert _errors(row) == [
        "event_source_mappings[name=orders].batch_size: must be between 1 and 10000 for "
        "source type 'kafka', got 20000",
        "event_source_mappings[name=orders].destination_config.on_failure.destination: "
        "unknown destination 'mailto:me'; use table, an sqs/sns/s3 ARN, an http(s):// URL, "
        "file:///PATH or kafka://TOPIC",
    ]


def test_row_with_unknown_function_or_source_type() -> None:
    row = row_from_mapping(mappings()["inbox"])
    row.function_name = "gone"
    assert _errors(row, functions={"echo": None}) == [
        "event_source_mappings[name=inbox].function_name: unknown function 'gone'; "
        "functions declared under functions: echo"
    ]
    row.source_type = "ftp"
    (line,) = _errors(row)
    assert line.startswith("event_source_mappings[name=inbox].source_type: unknown source type")


def test_row_for_unsupported_field_and_filter_limit() -> None:
    row = row_from_mapping(mappings()["inbox"])
    row.parallelization_factor = 3  # the default (1) is tolerated: rows have every column
    assert _errors(row) == [
        "event_source_mappings[name=inbox].parallelization_factor: not supported by source "
        "type 'directory'"
    ]
    row = row_from_mapping(mappings()["orders"])
    assert row.filter_criteria is not None
    row.filter_criteria = {"Filters": row.filter_criteria["Filters"] * 3}
    assert _errors(row) == [
        "event_source_mappings[name=orders].filter_criteria.Filters: at most 5 filter patterns "
        "per mapping (got 6); raise router.max_filter_patterns to allow more"
    ]
    assert (
        len(mapping_from_row(row, settings=RouterSettings(max_filter_patterns=6)).filter_patterns)
        == 6
    )


def test_row_written_by_hand_in_sql() -> None:
    """The columns an operator fills in an INSERT: nulls take the source type's defaults."""
    row = MappingRow(
        uuid="6f1c",
        name="by-hand",
        function_name="echo",
        source_type="sqs",
        source_config={"queue_url": "http://h/000000000000/q"},
        batch_size=None,
        filter_criteria={"filters": [{"pattern": '{"body": {"a": [1]}}'}]},
        origin="sql",
    )
    pytest.importorskip("router.filters")
    m = mapping_from_row(row)
    assert (m.uuid, m.origin, m.batch_size, m.maximum_batching_window) == ("6f1c", "sql", 10, 0.0)
    assert m.filter_patterns == ('{"body": {"a": [1]}}',)
    # AWS spelling in JSON columns is accepted too.
    row.source_type, row.source_config = "directory", {"path": "/in"}
    row.filter_criteria = None
    row.destination_config = {"OnFailure": {"Destination": "table"}}
    m = mapping_from_row(row)
    assert m.on_failure is not None and m.on_failure.type == "table"
    assert (m.batch_size, m.maximum_retry_attempts) == (1, 2)
