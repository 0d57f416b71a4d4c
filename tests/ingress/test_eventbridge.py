"""The event bus: boto3's ``events`` client, unmodified, putting events to a ``router run``
process whose rules (mappings of type ``eventbridge``) deliver them through the queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.ingress.router_process import lines, router_running, wait_for

HANDLER = """\
import json

def orders(event, context):
    with open("calls.jsonl", "a") as f:
        f.write(json.dumps(event) + "\\n")
    if isinstance(event, dict) and event.get("fail"):
        raise RuntimeError("refused")
    return {"ok": True}
"""

CONFIG = """\
router:
  ingress:
    listen: 127.0.0.1:{port}
functions:
  orders: {invoker: python, handler: app:orders}
mappings:
  - name: order-events
    function: orders
    source: {type: eventbridge, event_bus: default}
    filter_criteria:
      filters:
        - pattern: '{"source": ["shop"], "detail-type": ["OrderPlaced"]}'
  - name: shaped
    function: orders
    source:
      type: eventbridge
      event_bus: payments
      event_pattern: {source: [bank]}
      input_transformer:
        input_paths_map: {amount: $.detail.amount, id: $.id}
        input_template: '{"paid": <amount>, "event": "<id>", "rule": <aws.events.rule-name>}'
  - name: failing
    function: orders
    source:
      type: eventbridge
      event_bus: payments
      event_pattern: {source: [broken]}
      input_path: $.detail
    maximum_retry_attempts: 1
    maximum_event_age: 60
    destination_config:
      on_failure: {destination: "file://DLQ"}
"""


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    tmp = tmp_path_factory.mktemp("eventbridge")
    config = CONFIG.replace("DLQ", str(tmp / "dlq"))
    with router_running(tmp, config, HANDLER, started="mapping failing started") as url:
        client = boto3.client(
            "events",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
        )
        yield client, tmp


def _calls(tmp: Path) -> list[Any]:
    return lines(tmp / "calls.jsonl")


def test_matched_events_reach_the_function_in_eventbridge_shape(bus: tuple[Any, Path]) -> None:
    client, tmp = bus
    answer = client.put_events(
        Entries=[
            {
                "Source": "shop",
                "DetailType": "OrderPlaced",
                "Detail": json.dumps({"id": "o-1", "amount": 42.5}),
                "Resources": ["arn:aws:shop:::order/o-1"],
                "Time": datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
            },
            {"Source": "shop", "DetailType": "OrderShipped", "Detail": "{}"},
            {"Source": "aws.ec2", "DetailType": "x", "Detail": "{}"},
            {"Source": "shop", "DetailType": "OrderPlaced", "Detail": "not json"},
        ]
    )
    assert answer["FailedEntryCount"] == 2
    first, second, third, fourth = answer["Entries"]
    assert set(first) == {"EventId"} and set(second) == {"EventId"}
    assert third == {
        "ErrorCode": "NotAuthorizedForSourceException",
        "ErrorMessage": "Not authorized for the source.",
    }
    assert fourth["ErrorCode"] == "MalformedDetail"
    log = tmp / "router.log"
    (event,) = wait_for(
        lambda: [c for c in _calls(tmp) if c.get("id") == first["EventId"]], 20, log
    )
    assert event == {
        "version": "0",
        "id": first["EventId"],
        "detail-type": "OrderPlaced",
        "source": "shop",
        "account": "123456789012",
        "time": "2026-12-01T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:shop:::order/o-1"],
        "detail": {"id": "o-1", "amount": 42.5},
    }
    sample = json.loads(
        (Path(__file__).resolve().parents[1] / "fixtures/events/eventbridge-event.json").read_text()
    )
    assert list(event) == list(sample)
    # OrderShipped matched no rule: accepted, delivered nowhere.
    assert not [c for c in _calls(tmp) if c.get("id") == second["EventId"]]


def test_named_buses_and_input_transformers(bus: tuple[Any, Path]) -> None:
    client, tmp = bus
    answer = client.put_events(
        Entries=[
            {
                "Source": "bank",
                "DetailType": "Paid",
                "Detail": json.dumps({"amount": 7}),
                "EventBusName": "payments",
            },
            {
                "Source": "bank",
                "DetailType": "Paid",
                "Detail": "{}",
                "EventBusName": "arn:aws:events:us-east-1:123456789012:event-bus/nowhere",
            },
        ]
    )
    assert answer["FailedEntryCount"] == 1
    event_id = answer["Entries"][0]["EventId"]
    assert answer["Entries"][1] == {
        "ErrorCode": "ResourceNotFoundException",
        "ErrorMessage": "Event bus nowhere does not exist.",
    }
    (delivered,) = wait_for(
        lambda: [c for c in _calls(tmp) if c.get("event") == event_id], 20, tmp / "router.log"
    )
    assert delivered == {"paid": 7, "event": event_id, "rule": "shaped"}


def test_failed_events_are_retried_then_dead_lettered(bus: tuple[Any, Path]) -> None:
    client, tmp = bus
    answer = client.put_events(
        Entries=[
            {
                "Source": "broken",
                "DetailType": "x",
                "Detail": json.dumps({"fail": True, "n": 1}),
                "EventBusName": "payments",
            }
        ]
    )
    assert answer["FailedEntryCount"] == 0
    log = tmp / "router.log"
    found = wait_for(lambda: _dlq_file(tmp), 30, log)
    record = json.loads(found.read_text())
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestPayload"] == {"fail": True, "n": 1}
    assert [c for c in _calls(tmp) if c == {"fail": True, "n": 1}] == [{"fail": True, "n": 1}] * 2


def _dlq_file(tmp: Path) -> Path | None:
    folder = tmp / "dlq"
    files = sorted(folder.rglob("*.json")) if folder.exists() else []
    return files[0] if files else None


def test_malformed_requests_get_aws_errors(bus: tuple[Any, Path]) -> None:
    client, _ = bus
    with pytest.raises(ClientError) as caught:
        client.put_events(Entries=[{"Source": "a", "DetailType": "b", "Detail": "{}"}] * 11)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    big = json.dumps({"x": "a" * 200_000})
    with pytest.raises(ClientError) as caught:
        client.put_events(Entries=[{"Source": "a", "DetailType": "b", "Detail": big}] * 2)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "over the limit" in caught.value.response["Error"]["Message"]
