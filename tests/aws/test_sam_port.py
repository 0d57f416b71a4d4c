"""A SAM SQS event's Properties pasted unchanged into a mapping, run against moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import yaml

from router.sam import import_template
from router.store import SQLStore
from tests.aws import e2e_handlers
from tests.aws.util import make_queue, queue_counts
from tests.fixtures.aws import ACCOUNT, unique
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.aws


@pytest.fixture(autouse=True)
def events() -> Iterator[list[dict[str, Any]]]:
    e2e_handlers.EVENTS.clear()
    yield e2e_handlers.EVENTS
    e2e_handlers.EVENTS.clear()


async def test_sam_sqs_properties_run_as_written(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    async with aws.client("sqs") as sqs:
        name = unique("orders")
        url = await make_queue(sqs, name)
        await _send_states(sqs, url)
        config = f"""
functions:
  f:
    invoker: python
    handler: tests.aws.e2e_handlers:record
mappings:
  - name: orders
    function: f
    Queue: arn:aws:sqs:us-east-1:{ACCOUNT}:{name}
    BatchSize: 10
    MaximumBatchingWindowInSeconds: 1
    FunctionResponseTypes: [ReportBatchItemFailures]
    ScalingConfig: {{MaximumConcurrency: 5}}
    FilterCriteria:
      Filters:
        - Pattern: '{{"body": {{"state": ["PAID"]}}}}'
    endpoint_url: {aws.endpoint}
    region: us-east-1
"""
        await _run_and_check(config, sqlite_store, sqs, url, name, events)


async def test_an_imported_sam_template_runs(
    aws: Any, sqlite_store: SQLStore, events: list[dict[str, Any]]
) -> None:
    """``router import-sam``'s output for a template's SQS event, run as printed."""
    async with aws.client("sqs") as sqs:
        name = unique("imported")
        url = await make_queue(sqs, name)
        await _send_states(sqs, url)
        template = f"""
Transform: AWS::Serverless-2016-10-31
Resources:
  Orders:
    Type: AWS::SQS::Queue
    Properties: {{QueueName: {name}}}
  f:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: tests.aws.e2e_handlers.record
      Events:
        Orders:
          Type: SQS
          Properties:
            Queue: !GetAtt Orders.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
            FilterCriteria:
              Filters:
                - Pattern: '{{"body": {{"state": ["PAID"]}}}}'
"""
        imported = import_template(template, "template.yaml", endpoint_url=aws.endpoint)
        assert imported.notes == []
        config = yaml.safe_dump(imported.config)
        await _run_and_check(config, sqlite_store, sqs, url, name, events)


async def _send_states(sqs: Any, url: str) -> None:
    for state in ("PAID", "OPEN", "PAID"):
        await sqs.send_message(QueueUrl=url, MessageBody=orjson.dumps({"state": state}).decode())


async def _run_and_check(
    config: str,
    store: SQLStore,
    sqs: Any,
    url: str,
    name: str,
    events: list[dict[str, Any]],
) -> None:
    """Run ``config`` until both PAID messages were delivered and the queue is empty."""
    async with run_router(config, store):
        await eventually(lambda: _two_paid(events), timeout=30, what="two PAID messages")
        await eventually(
            lambda: _drained(sqs, url), timeout=30, what="the filtered message deleted"
        )
    records = [r for e in events for r in e["Records"]]
    # moto now and then hands one message of a standard queue to two racing receives (at
    # least once, as SQS may): count messages, not deliveries.
    bodies = {r["messageId"]: r["body"] for r in records}
    assert sorted(bodies.values()) == ['{"state":"PAID"}', '{"state":"PAID"}']
    assert records[0]["eventSourceARN"] == f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


def _two_paid(events: list[dict[str, Any]]) -> bool:
    return len({r["messageId"] for e in events for r in e["Records"]}) >= 2


async def _drained(sqs: Any, url: str) -> bool:
    return await queue_counts(sqs, url) == (0, 0)
