"""The pushed SAM event types (S3, SNS, Schedule, ScheduleV2, EventBridgeRule, HttpApi) and
Kafka's SourceAccessConfigurations pasted into a mapping without ``source:``."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from router.errors import ConfigErrors
from tests.config.test_sam import FUNCTIONS, _load

CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], dict[str, Any]]] = [
    (
        "SAM S3 (notifications through a queue, only this bucket's)",
        {
            "Bucket": "photos",
            "Events": "s3:ObjectCreated:*",
            "Filter": {
                "S3Key": {
                    "Rules": [
                        {"Name": "prefix", "Value": "in/"},
                        {"Name": "suffix", "Value": ".jpg"},
                    ]
                }
            },
            "queue_url": "http://127.0.0.1:4566/123456789012/photos-events",
        },
        "s3",
        {
            "bucket": "photos",
            "events": ("s3:ObjectCreated:*",),
            "prefix": "in/",
            "suffix": ".jpg",
        },
        {},
    ),
    (
        "SAM S3 (polling)",
        {"Bucket": "photos", "Events": ["s3:ObjectCreated:Put", "s3:ObjectRemoved:*"]},
        "s3",
        {"bucket": "photos", "queue_url": None},
        {},
    ),
    (
        "SAM SNS",
        {
            "Topic": "arn:aws:sns:us-east-1:123456789012:alerts",
            "FilterPolicy": {"severity": ["high"]},
            "FilterPolicyScope": "MessageAttributes",
            "path": "/sns/alerts",
        },
        "sns",
        {"topic_arn": "arn:aws:sns:us-east-1:123456789012:alerts", "path": "/sns/alerts"},
        {"filter_patterns": ('{"severity":["high"]}',)},
    ),
    (
        "SAM Schedule",
        {
            "Schedule": "rate(5 minutes)",
            "Name": "every-five",
            "Description": "tick",
            "Enabled": False,
            "Input": '{"kind": "tick"}',
            "RetryPolicy": {"MaximumRetryAttempts": 5, "MaximumEventAgeInSeconds": 600},
            "DeadLetterConfig": {"Type": "SQS", "Arn": "arn:aws:sqs:us-east-1:123456789012:dlq"},
        },
        "schedule",
        {"schedule": "rate(5 minutes)", "input": '{"kind": "tick"}'},
        {"enabled": False, "maximum_retry_attempts": 5, "maximum_record_age": 600},
    ),
    (
        "SAM ScheduleV2",
        {
            "ScheduleExpression": "cron(0 8 * * ? *)",
            "ScheduleExpressionTimezone": "Europe/Berlin",
            "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5},
            "Name": "morning",
            "Description": "daily at eight",
            "State": "DISABLED",
            "RetryPolicy": {"MaximumRetryAttempts": 3},
            "StartDate": "2026-01-01T00:00:00Z",
        },
        "schedule",
        {"schedule": "cron(0 8 * * ? *)", "timezone": "Europe/Berlin"},
        {"enabled": False, "maximum_retry_attempts": 3},
    ),
    (
        "SAM EventBridgeRule",
        {
            "Pattern": {"source": ["orders"], "detail-type": ["OrderPlaced"]},
            "EventBusName": "shop",
            "RuleName": "placed",
            "State": "ENABLED",
            "InputPath": "$.detail",
            "RetryPolicy": {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 3600},
        },
        "eventbridge",
        {"event_bus": "shop", "input_path": "$.detail"},
        {"enabled": True, "maximum_retry_attempts": 2, "maximum_record_age": 3600},
    ),
    (
        "SAM HttpApi",
        {"Path": "/orders/{id}", "Method": "get", "PayloadFormatVersion": "2.0"},
        "http",
        {"path": "/orders/{id}", "methods": ("GET",)},
        {},
    ),
    (
        "SAM SelfManagedKafka with SASL/SCRAM access (and the VPC entries AWS needs)",
        {
            "Topics": ["orders"],
            "KafkaBootstrapServers": ["127.0.0.1:9092"],
            "StartingPosition": "LATEST",
            "SourceAccessConfigurations": [
                {"Type": "SASL_SCRAM_512_AUTH", "URI": "${KAFKA_CREDENTIALS}"},
                {"Type": "VPC_SUBNET", "URI": "subnet:subnet-1"},
                {"Type": "VPC_SECURITY_GROUP", "URI": "security_group:sg-1"},
            ],
        },
        "kafka",
        {"sasl_mechanism": "SCRAM-SHA-512", "security_protocol": "SASL_SSL"},
        {},
    ),
]


@pytest.mark.parametrize(
    ("properties", "source_type", "settings", "mapping"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_event_properties_become_a_mapping(
    properties: dict[str, Any],
    source_type: str,
    settings: dict[str, Any],
    mapping: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_CREDENTIALS", '{"username": "u", "password": "p"}')
    m = _load(properties)
    assert m.source.type == source_type
    dumped = m.source.settings.model_dump()
    assert {k: dumped[k] for k in settings} == settings
    assert {k: getattr(m, k) for k in mapping} == mapping


def test_a_schedule_dead_letter_queue_is_the_on_failure_destination() -> None:
    m = _load(
        {
            "Schedule": "rate(1 hour)",
            "DeadLetterConfig": {"Type": "SQS", "Arn": "arn:aws:sqs:us-east-1:123456789012:dlq"},
        }
    )
    assert m.on_failure is not None
    assert m.on_failure.type == "sqs"


def test_kafka_sasl_credentials_come_from_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CREDENTIALS", '{"username": "u", "password": "p"}')
    m = _load(
        {
            "Topics": ["t"],
            "KafkaBootstrapServers": ["127.0.0.1:9092"],
            "StartingPosition": "LATEST",
            "security_protocol": "SASL_PLAINTEXT",
            "SourceAccessConfigurations": [{"Type": "BASIC_AUTH", "URI": "${KAFKA_CREDENTIALS}"}],
        }
    )
    kwargs = m.source.settings.client_kwargs()
    assert kwargs["sasl_mechanism"] == "PLAIN"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("u", "p")


def _errors(body: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        _load_text(body)
    return str(info.value).splitlines()


def _load_text(body: str) -> None:
    from router.config import load_config_text

    load_config_text(FUNCTIONS + "mappings:\n" + textwrap.indent(body, "  "), "t.yaml")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "State: PAUSED\n",
            "t.yaml:7: mappings[0].State: State must be ENABLED or DISABLED",
        ),
        (
            "State: ENABLED\n  Enabled: true\n",
            "t.yaml:7: mappings[0].State: State and Enabled give the same setting; give it once",
        ),
        (
            "RetryPolicy: {MaximumRetryAttempts: 1, Tries: 2}\n",
            "t.yaml:7: mappings[0].RetryPolicy: RetryPolicy must be "
            "{MaximumRetryAttempts: N, MaximumEventAgeInSeconds: N}",
        ),
        (
            "DeadLetterConfig: {Type: SQS, QueueLogicalId: Dlq}\n",
            "t.yaml:7: mappings[0].DeadLetterConfig: DeadLetterConfig must be {Arn: "
            "arn:aws:sqs:REGION:ACCOUNT:QUEUE} (a queue SAM would create, QueueLogicalId, "
            "does not exist here: give its ARN)",
        ),
    ],
)
def test_schedule_properties_of_the_wrong_shape(body: str, expected: str) -> None:
    (line,) = _errors(f"- name: m\n  function: f\n  Schedule: rate(1 hour)\n  {body}")
    assert line == expected


def test_polling_sees_only_new_objects() -> None:
    (line,) = _errors("- name: m\n  function: f\n  Bucket: b\n  Events: s3:ObjectRemoved:*\n")
    assert "polling a bucket (no queue_url) sees new objects only" in line


def test_kafka_tls_access_names_the_settings_to_use() -> None:
    (line,) = _errors(
        "- name: m\n  function: f\n  Topics: [t]\n  KafkaBootstrapServers: ['h:9092']\n"
        "  StartingPosition: LATEST\n"
        "  SourceAccessConfigurations: [{Type: CLIENT_CERTIFICATE_TLS_AUTH, URI: x}]\n"
    )
    assert "give ssl_cafile / ssl_certfile / ssl_keyfile" in line


def test_an_unknown_schedule_key_lists_both_spellings() -> None:
    (line,) = _errors("- name: m\n  function: f\n  Schedule: rate(1 hour)\n  Zzzqq: 1\n")
    known = line.split("known keys: ")[1].split(", ")
    assert {"Schedule", "schedule", "ScheduleExpression", "BatchSize", "batch_size"} <= set(known)
