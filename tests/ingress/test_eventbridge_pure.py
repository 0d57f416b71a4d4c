"""PutEvents validation, EventBridge events and target input transformation, table-driven."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.eventbridge.events import (
    MAX_REQUEST_SIZE,
    Entry,
    EntryError,
    answer,
    build_event,
    check_entry,
    entry_size,
    parse_request,
)
from connectors.eventbridge.transform import JsonPath, RuleInfo, TargetInput, TransformError
from router.ingress.errors import AwsError

SAMPLE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/events/eventbridge-event.json").read_text()
)
GOOD = {"Source": "shop", "DetailType": "OrderPlaced", "Detail": '{"id": "o-1", "amount": 42.5}'}


def test_the_event_has_the_shape_aws_documents() -> None:
    entry = check_entry(GOOD)
    assert isinstance(entry, Entry)
    event = build_event(
        entry,
        account="123456789012",
        region="us-east-1",
        received=datetime(2026, 12, 1, 12, 0, 0, 400000, tzinfo=UTC),
        event_id=SAMPLE["id"],
    )
    assert event == SAMPLE
    assert list(event) == list(SAMPLE)


def test_the_entry_time_is_the_event_time() -> None:
    entry = check_entry({**GOOD, "Time": 1796126400, "Resources": ["arn:aws:x:1"]})
    assert isinstance(entry, Entry)
    event = build_event(entry, account="1", region="r", received=datetime.now(UTC))
    assert event["time"] == "2026-12-01T12:00:00Z"
    assert event["resources"] == ["arn:aws:x:1"]


@pytest.mark.parametrize(
    ("entry", "code", "message"),
    [
        (
            {**GOOD, "Source": None},
            "InvalidArgument",
            "Parameter Source is not valid. Reason: Source is a required argument.",
        ),
        (
            {k: v for k, v in GOOD.items() if k != "DetailType"},
            "InvalidArgument",
            "Parameter DetailType is not valid. Reason: DetailType is a required argument.",
        ),
        (
            {**GOOD, "Detail": ""},
            "InvalidArgument",
            "Parameter Detail is not valid. Reason: Detail is a required argument.",
        ),
        ({**GOOD, "Detail": "{not json"}, "MalformedDetail", "Detail is malformed."),
        ({**GOOD, "Detail": "[1, 2]"}, "MalformedDetail", "Detail is malformed."),
        (
            {**GOOD, "Source": "aws.ec2"},
            "NotAuthorizedForSourceException",
            "Not authorized for the source.",
        ),
        ({**GOOD, "Source": 5}, "InvalidArgument", "Source must be a string."),
        ({**GOOD, "Resources": "arn"}, "InvalidArgument", "Resources must be a list"),
        ({**GOOD, "Time": "yesterday"}, "InvalidArgument", "Time must be a timestamp."),
        ({**GOOD, "Colour": "red"}, "InvalidArgument", "Colour is not a member"),
        ("text", "InvalidArgument", "An entry must be a JSON object."),
    ],
)
def test_entry_errors(entry: Any, code: str, message: str) -> None:
    error = check_entry(entry)
    assert isinstance(error, EntryError)
    assert error.code == code
    assert message in error.message


@pytest.mark.parametrize(
    ("bus", "name"),
    [
        (None, "default"),
        ("orders", "orders"),
        ("arn:aws:events:us-east-1:123456789012:event-bus/orders", "orders"),
    ],
)
def test_bus_names(bus: str | None, name: str) -> None:
    entry = check_entry({**GOOD, "EventBusName": bus} if bus else GOOD)
    assert isinstance(entry, Entry) and entry.bus == name


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{", "SerializationException", "not valid JSON"),
        (b"[]", "SerializationException", "not a JSON object"),
        (b"{}", "ValidationException", "Member must not be null"),
        (b'{"Entries": []}', "ValidationException", "greater than or equal to 1"),
        (
            json.dumps({"Entries": [GOOD] * 11}).encode(),
            "ValidationException",
            "less than or equal to 10",
        ),
        (
            json.dumps(
                {"Entries": [{**GOOD, "Detail": json.dumps({"x": "a" * 100_000})}] * 3}
            ).encode(),
            "ValidationException",
            "Total size of the entries in the request is over the limit.",
        ),
    ],
)
def test_request_errors(body: bytes, code: str, message: str) -> None:
    with pytest.raises(AwsError) as caught:
        parse_request(body)
    assert caught.value.status == 400
    assert caught.value.code == code
    assert message in caught.value.message


def test_entry_size_counts_as_eventbridge_does() -> None:
    entry = {**GOOD, "Time": 1, "Resources": ["ab", "é"]}
    assert entry_size(entry) == 14 + 4 + 11 + len(GOOD["Detail"]) + 2 + 2
    detail = json.dumps({"x": "a" * (MAX_REQUEST_SIZE - 200)})
    assert len(parse_request(json.dumps({"Entries": [{**GOOD, "Detail": detail}]}).encode())) == 1


def test_the_answer_counts_failures() -> None:
    assert answer([{"EventId": "a"}, {"ErrorCode": "X", "ErrorMessage": "y"}]) == {
        "FailedEntryCount": 1,
        "Entries": [{"EventId": "a"}, {"ErrorCode": "X", "ErrorMessage": "y"}],
    }


EC2: dict[str, Any] = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2015-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    "detail": {"instance-id": "i-0123456789", "state": "RUNNING", "tags": [{"k": "a"}, {"k": "b"}]},
}
RULE = RuleInfo(name="example", arn="arn:aws:events:us-east-2:123456789012:rule/example")
PATHS = {"instance": "$.detail.instance-id", "state": "$.detail.state"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('"instance <instance> is in <state>"', "instance i-0123456789 is in RUNNING"),
        (
            '"instance \\"<instance>\\" is in <state>"',
            'instance "i-0123456789" is in RUNNING',
        ),
        (
            '{"instance" : <instance>, "state": <state>}',
            {"instance": "i-0123456789", "state": "RUNNING"},
        ),
        (
            '{"instance": <instance>, "state": "<state>", '
            '"instanceStatus": "instance \\"<instance>\\" is in <state>"}',
            {
                "instance": "i-0123456789",
                "state": "RUNNING",
                "instanceStatus": 'instance "i-0123456789" is in RUNNING',
            },
        ),
        (
            '{"instance" : <instance>, "state": [ 9, <state>, true ], "Transformed" : "Yes"}',
            {"instance": "i-0123456789", "state": [9, "RUNNING", True], "Transformed": "Yes"},
        ),
        (
            '{"ruleArn": <aws.events.rule-arn>, "ruleName": <aws.events.rule-name>, '
            '"originalEvent": <aws.events.event>}',
            {
                "ruleArn": RULE.arn,
                "ruleName": "example",
                "originalEvent": {k: v for k, v in EC2.items() if k != "detail"},
            },
        ),
        ('{"all": <aws.events.event.json>}', {"all": EC2}),
        ('"<aws.events.rule-name> triggered"', "example triggered"),
        ('{"at": <aws.events.event.ingestion-time>}', {"at": "2026-12-01T12:00:00Z"}),
        # a value that is no string, inside a string: its JSON text
        ('{"tags": "<tags>"}', {"tags": '[{"k":"a"},{"k":"b"}]'}),
        ('{"tags": <tags>}', {"tags": [{"k": "a"}, {"k": "b"}]}),
        # a path the event lacks: null outside a string, nothing inside one
        ('{"gone": <gone>, "text": "[<gone>]"}', {"gone": None, "text": "[]"}),
        # <name> that names no variable stays as it is
        ('"a <b>bold</b> move"', "a <b>bold</b> move"),
    ],
)
def test_input_templates(template: str, expected: Any) -> None:
    paths = {**PATHS, "tags": "$.detail.tags", "gone": "$.detail.nothing"}
    target = TargetInput.parse(paths_map=paths, template=template)
    assert target.apply(EC2, RULE, "2026-12-01T12:00:00Z") == expected


def test_a_quote_in_a_value_keeps_the_json_valid() -> None:
    target = TargetInput.parse(paths_map={"s": "$.detail.s"}, template='{"m": "say <s>"}')
    assert target.apply({"detail": {"s": 'a "quoted" \\ word'}}, RULE, "") == {
        "m": 'say a "quoted" \\ word'
    }


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("$", EC2),
        ("$.detail", EC2["detail"]),
        ("$.detail.instance-id", "i-0123456789"),
        ("$['detail']['state']", "RUNNING"),
        ("$.resources[0]", EC2["resources"][0]),
        ("$.detail.tags[*].k", ["a", "b"]),
        ("$.detail.tags[1].k", "b"),
        ("$.detail.*", ["i-0123456789", "RUNNING", [{"k": "a"}, {"k": "b"}]]),
        ("$.detail.absent", None),
        ("$.resources[5]", None),
    ],
)
def test_input_path(path: str, found: Any) -> None:
    assert TargetInput.parse(input_path=path).apply(EC2, RULE, "") == found


def test_constant_input_and_identity() -> None:
    assert TargetInput.parse(input='{"fixed": true}').apply(EC2, RULE, "") == {"fixed": True}
    identity = TargetInput.parse()
    assert identity.is_identity and identity.apply(EC2, RULE, "") is EC2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"input": "{nope"}, "Input is not valid JSON"),
        ({"input": "1", "input_path": "$"}, "Input and InputPath exclude each other"),
        ({"input_path": "detail"}, "starts with '\\$'"),
        ({"input_path": "$.a..b"}, "cannot read"),
        ({"paths_map": {"x": "$.a"}, "template": ""}, "InputTemplate is required"),
        ({"paths_map": {"a b": "$.a"}, "template": "<a>"}, "use letters, digits"),
        ({"paths_map": {"aws.x": "$.a"}, "template": "1"}, "use letters, digits"),
        ({"paths_map": {f"v{i}": "$.a" for i in range(101)}, "template": "1"}, "at most 100"),
        ({"paths_map": {"x": "$.a"}, "template": "instance <x> is up"}, "does not give JSON"),
        ({"paths_map": {"x": "$.a"}, "template": "x" * 8193}, "at most 8192"),
    ],
)
def test_invalid_inputs(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformError, match=message):
        TargetInput.parse(**settings)


def test_json_path_has_wildcard() -> None:
    assert JsonPath.parse("$.a[*]").has_wildcard
    assert not JsonPath.parse("$.a[0]").has_wildcard
