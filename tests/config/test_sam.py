"""SAM ``Events:`` Properties and ``AWS::Lambda::EventSourceMapping`` properties pasted into
a mapping without ``source:``: the source type and settings each becomes."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml

from router.config import load_config_text
from router.errors import ConfigErrors

FUNCTIONS = "functions:\n  f: {invoker: python, handler: 'json:dumps'}\n"


def _load(properties: dict[str, Any]) -> Any:
    text = FUNCTIONS + yaml.safe_dump({"mappings": [{"name": "m", "function": "f", **properties}]})
    (mapping,) = load_config_text(text, "t.yaml").mappings
    return mapping


CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], dict[str, Any]]] = [
    (
        "SAM SQS",
        {
            "Queue": "arn:aws:sqs:us-east-1:123456789012:orders",
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": 1,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": {"MaximumConcurrency": 5},
            "Enabled": True,
            "endpoint_url": "http://127.0.0.1:4566",
            "region": "us-east-1",
        },
        "sqs",
        {"queue_url": "http://127.0.0.1:4566/123456789012/orders", "region": "us-east-1"},
        {"batch_size": 10, "maximum_concurrency": 5, "report_batch_item_failures": True},
    ),
    (
        "CloudFormation SQS (no endpoint: the AWS queue URL)",
        {"EventSourceArn": "arn:aws:sqs:eu-west-1:123456789012:jobs", "BatchSize": 5},
        "sqs",
        {"queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"},
        {"batch_size": 5},
    ),
    (
        "SAM Kinesis",
        {
            "Stream": "arn:aws:kinesis:us-east-1:123456789012:stream/clicks",
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 100,
            "ParallelizationFactor": 2,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 3,
            "DestinationConfig": {
                "OnFailure": {
                    "Type": "SQS",
                    "Destination": "arn:aws:sqs:us-east-1:123456789012:dlq",
                }
            },
        },
        "kinesis",
        {"stream_arn": "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"},
        {"batch_size": 100, "parallelization_factor": 2, "maximum_retry_attempts": 3},
    ),
    (
        "SAM DynamoDB",
        {
            "Stream": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/"
            "2024-01-01T00:00:00.000",
            "StartingPosition": "LATEST",
            "DestinationConfig": {
                "OnFailure": {"Type": "SNS", "Destination": "arn:aws:sns:us-east-1:123456789012:t"}
            },
        },
        "dynamodb",
        {
            "stream_arn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/"
            "2024-01-01T00:00:00.000"
        },
        {"starting_position": "LATEST"},
    ),
    (
        "SAM SelfManagedKafka",
        {
            "Topics": ["orders"],
            "KafkaBootstrapServers": ["127.0.0.1:9092"],
            "ConsumerGroupId": "g1",
            "StartingPosition": "TRIM_HORIZON",
        },
        "kafka",
        {"topics": ["orders"], "bootstrap_servers": ["127.0.0.1:9092"], "consumer_group_id": "g1"},
        {"starting_position": "TRIM_HORIZON"},
    ),
    (
        "CloudFormation self-managed Kafka",
        {
            "Topics": ["orders"],
            "SelfManagedEventSource": {"Endpoints": {"KafkaBootstrapServers": ["k1:9092"]}},
            "SelfManagedKafkaEventSourceConfig": {"ConsumerGroupId": "g2"},
            "StartingPosition": "LATEST",
        },
        "kafka",
        {"topics": ["orders"], "bootstrap_servers": ["k1:9092"], "consumer_group_id": "g2"},
        {},
    ),
    (
        "SAM MSK (cluster ARN, servers beside)",
        {
            "Stream": "arn:aws:kafka:us-east-1:123456789012:cluster/c/abc",
            "Topics": ["t"],
            "StartingPosition": "LATEST",
            "bootstrap_servers": ["b-1.c:9092"],
        },
        "kafka",
        {"topics": ["t"], "bootstrap_servers": ["b-1.c:9092"]},
        {},
    ),
    (
        "SAM MQ (RabbitMQ)",
        {
            "Broker": "arn:aws:mq:us-east-1:123456789012:broker:b:b-1",
            "Queues": ["orders"],
            "SourceAccessConfigurations": [{"Type": "VIRTUAL_HOST", "URI": "/"}],
            "BatchSize": 10,
            "url": "amqp://127.0.0.1:5672/",
        },
        "rabbitmq",
        {
            "queues": ["orders"],
            "virtual_host": "/",
            "event_source_arn": "arn:aws:mq:us-east-1:123456789012:broker:b:b-1",
        },
        {"batch_size": 10},
    ),
]


@pytest.mark.parametrize(
    ("properties", "source_type", "settings", "mapping"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_properties_become_a_mapping(
    properties: dict[str, Any],
    source_type: str,
    settings: dict[str, Any],
    mapping: dict[str, Any],
) -> None:
    m = _load(properties)
    assert m.source.type == source_type
    dumped = m.source.settings.model_dump()
    assert {k: dumped[k] for k in settings} == settings
    assert {k: getattr(m, k) for k in mapping} == mapping


def _errors(body: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config_text(FUNCTIONS + "mappings:\n" + textwrap.indent(body, "  "), "t.yaml")
    return str(info.value).splitlines()


def test_an_unknown_key_lists_both_spellings() -> None:
    (line,) = _errors(
        "- name: m\n  function: f\n  Queue: arn:aws:sqs:us-east-1:123456789012:q\n  Zzzqq: 1\n"
    )
    assert line.startswith("t.yaml:7: mappings[0].Zzzqq: unknown key 'Zzzqq'; known keys: ")
    known = line.split("known keys: ")[1].split(", ")
    assert {"BatchSize", "batch_size", "queue_url", "endpoint_url", "ScalingConfig"} <= set(known)


def test_an_unknown_key_of_a_mapping_with_source_lists_both_spellings() -> None:
    (line,) = _errors(
        "- name: m\n  function: f\n  source: {type: sqs, queue_url: 'http://h/1/q'}\n  Zzzqq: 1\n"
    )
    known = line.split("known keys: ")[1].split(", ")
    assert {"BatchSize", "batch_size", "FilterCriteria", "filter_criteria"} <= set(known)


def test_an_arn_of_a_service_no_source_reads() -> None:
    (line,) = _errors(
        "- name: m\n  function: f\n  EventSourceArn: arn:aws:docdb:us-east-1:1:cluster:c\n"
    )
    assert "no source type reads 'docdb' ARNs" in line and "write source:" in line


def test_a_stream_that_is_not_an_arn_gets_a_stream_example() -> None:
    (line,) = _errors("- name: m\n  function: f\n  Stream: StreamARNNotPassed\n")
    assert line == (
        "t.yaml:6: mappings[0].Stream: Stream must be an ARN "
        "(arn:aws:SERVICE:REGION:ACCOUNT:NAME), e.g. "
        "arn:aws:kinesis:us-east-1:123456789012:stream/clicks or "
        "arn:aws:kafka:us-east-1:123456789012:cluster/shop/0"
    )


def test_the_destination_type_must_match_the_arn() -> None:
    (line,) = _errors(
        "- name: m\n  function: f\n"
        "  Stream: arn:aws:kinesis:us-east-1:123456789012:stream/s\n"
        "  StartingPosition: LATEST\n"
        "  DestinationConfig:\n    OnFailure:\n      Type: SNS\n"
        "      Destination: arn:aws:sqs:us-east-1:123456789012:dlq\n"
    )
    assert line == (
        "t.yaml:10: mappings[0].DestinationConfig.OnFailure.Type: "
        "Type SNS does not match the sqs ARN of Destination"
    )


def test_a_queue_given_twice() -> None:
    (line,) = _errors(
        "- name: m\n  function: f\n  Queue: arn:aws:sqs:us-east-1:123456789012:q\n"
        "  queue_url: http://h/123456789012/q\n"
    )
    assert "give the queue once: Queue or queue_url" in line


@pytest.mark.parametrize("key", ["TumblingWindowInSeconds", "tumbling_window"])
def test_a_tumbling_window_ports(key: str) -> None:
    mapping = _load(
        {
            "Stream": "arn:aws:kinesis:us-east-1:123456789012:stream/s",
            "StartingPosition": "LATEST",
            key: 60,
        }
    )
    assert mapping.tumbling_window == 60


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  Stream: arn:aws:kinesis:us-east-1:123456789012:stream/s\n"
            "  StartingPosition: LATEST\n  TumblingWindowInSeconds: 901\n",
            "TumblingWindowInSeconds: must be between 0 and 900",
        ),
        (
            "  Queue: arn:aws:sqs:us-east-1:123456789012:q\n  TumblingWindowInSeconds: 60\n",
            "TumblingWindowInSeconds: not supported by source type 'sqs'",
        ),
    ],
)
def test_a_tumbling_window_out_of_limits(body: str, message: str) -> None:
    (line,) = _errors("- name: m\n  function: f\n" + body)
    assert message in line
