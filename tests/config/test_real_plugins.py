"""The configuration against the real plug-ins (no test doubles), where they exist, and the
JSON Schema."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import textwrap

import pytest

from router.config import json_schema, load_config_text, mapping_from_row, row_from_mapping
from router.errors import ConfigErrors
from tests.config.test_load import BRIEF_EXAMPLE, errors_of


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


@pytest.mark.skipif(
    not _importable("connectors.directory"),
    reason="connectors/directory.py (the directory source) is not in this build yet",
)
def test_brief_example_with_the_real_directory_source_and_python_invoker() -> None:
    config = load_config_text(BRIEF_EXAMPLE, "router.yaml")
    (m,) = config.mappings
    assert (m.source.type, m.batch_size) == ("directory", 1)
    assert type(config.functions["echo"].settings).__module__ == "router.invokers.python"
    row = row_from_mapping(m)
    assert mapping_from_row(row, config.functions) == dataclasses.replace(m, uuid=row.uuid)


KAFKA = textwrap.dedent("""\
    router:
      allow_plaintext_secrets: true   # the password below is written in place
    functions:
      echo:
        invoker: python
        handler: app.handlers:on_order
        timeout: 30
    mappings:
      - name: orders
        function: echo
        source:
          type: kafka
          bootstrap_servers: ["127.0.0.1:9092"]
          topics: [orders]
          sasl_plain_password: s3cret
        StartingPosition: TRIM_HORIZON
        BatchSize: 200
        FilterCriteria:
          Filters:
            - Pattern: '{"value": {"kind": ["order"]}}'
        DestinationConfig:
          OnFailure: {Destination: "kafka://orders-dlq"}
          OnSuccess: {Destination: table}
    """)


def test_real_kafka_source_python_invoker_and_destinations() -> None:
    config = load_config_text(KAFKA, "kafka.yaml")
    (m,) = config.mappings
    assert (m.starting_position, m.batch_size, m.maximum_batching_window) == (
        "TRIM_HORIZON",
        200,
        0.5,
    )
    assert m.on_failure is not None and m.on_failure.type == "kafka"
    # kafka://TOPIC is a topic on the source's own cluster, as in AWS.
    dlq = m.on_failure.settings.model_dump()
    assert (dlq["topic"], dlq["bootstrap_servers"]) == ("orders-dlq", ["127.0.0.1:9092"])
    assert m.on_success is not None and m.on_success.type == "table"
    row = row_from_mapping(m)
    again = mapping_from_row(row, config.functions)
    assert again.on_failure == m.on_failure and again.source == m.source
    assert "s3cret" not in repr(m)


def test_real_python_invoker_checks_the_handler_shape() -> None:
    lines = errors_of("functions:\n  echo:\n    invoker: python\n    handler: 'a b'\n")
    assert len(lines) == 1
    assert lines[0].startswith("c.yaml:4: functions.echo.handler: ")


def test_json_schema_describes_every_type_and_alias() -> None:
    schema = json_schema()
    json.dumps(schema)  # serialisable as is
    assert set(schema["properties"]) == {"router", "functions", "mappings"}
    assert schema["additionalProperties"] is False
    # A mapping with source:, or one written with SAM / CloudFormation properties.
    mapping, ported = schema["properties"]["mappings"]["items"]["anyOf"]
    props = mapping["properties"]
    for spelling in ("batch_size", "BatchSize", "FunctionName", "MaximumBatchingWindowInSeconds"):
        assert spelling in props
    assert set(mapping["required"]) == {"name", "source"}
    assert {"required": ["function"]} in mapping["allOf"][0]["oneOf"]  # or FunctionName
    assert {"required": ["FunctionName"]} in mapping["allOf"][0]["oneOf"]
    assert "source" not in ported["properties"]
    source = props["source"]
    types = [b["properties"]["type"]["const"] for b in source["oneOf"]]
    assert types == sorted(
        [
            "directory",
            "schedule",
            "kafka",
            "kinesis",
            "dynamodb",
            "sqs",
            "s3",
            "http",
            "eventbridge",
            "sns",
            "rabbitmq",
            "redis",
            "nats",
        ]
    )
    kafka = next(b for b in source["oneOf"] if b["properties"]["type"]["const"] == "kafka")
    assert "topics" in kafka["properties"] and kafka["additionalProperties"] is False
    function = schema["properties"]["functions"]["additionalProperties"]
    python = next(b for b in function["oneOf"] if b["properties"]["invoker"]["const"] == "python")
    assert {"handler", "timeout"} <= set(python["properties"])
    dc = schema["$defs"]["DestinationConfigModel"]["properties"]
    assert {"on_failure", "OnFailure", "on_success", "OnSuccess"} <= set(dc)


def test_http_destination_with_credentials_twice_is_refused() -> None:
    lines = errors_of(
        """\
        functions:
          echo: {invoker: python, handler: router.examples.hello:handler}
        mappings:
          - name: inbox
            function: echo
            source: {type: directory, path: ./inbox}
            destination_config:
              on_failure:
                type: http
                url: https://router:${HOOK_PASSWORD}@hooks.example.com/failed
                headers: {Authorization: "${HOOK_TOKEN}"}
        """
    )
    assert lines == [
        "c.yaml:8: mappings[0].destination_config.on_failure: the url has credentials "
        "(user:password@) and the Authorization header is set too; the HTTP client refuses "
        "such requests: keep one of them"
    ]


SQS = """\
functions:
  echo: {invoker: python, handler: router.examples.hello:handler}
mappings:
  - name: orders
    function: echo
    source: {type: sqs, queue_url: "https://sqs.us-east-1.amazonaws.com/123456789012/orders"}
    BatchSize: 11
    MaximumBatchingWindowInSeconds: 1
"""


def test_the_real_sqs_source_brings_its_own_mapping_rule() -> None:
    (m,) = load_config_text(SQS, "c.yaml").mappings
    assert m.batch_size == 11
    assert errors_of(SQS.replace("MaximumBatchingWindowInSeconds: 1", "Enabled: true")) == [
        "c.yaml:7: mappings[0].BatchSize: a batch_size above 10 needs maximum_batching_window "
        "of at least 1 second (as AWS requires for SQS)"
    ]
    # An operator shortens the window in SQL: the stored row is refused by the same rule.
    row = row_from_mapping(m)
    row.maximum_batching_window = 0.5
    with pytest.raises(ConfigErrors) as e:
        mapping_from_row(row)
    assert str(e.value) == (
        "event_source_mappings[name=orders].batch_size: a batch_size above 10 needs "
        "maximum_batching_window of at least 1 second (as AWS requires for SQS)"
    )
