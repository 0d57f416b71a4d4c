"""The DynamoDB Streams source through a running Router (SQLite store, moto server over
HTTP): the table's stream found from its name, aws:dynamodb events, filters on the
``dynamodb`` object, bisect to the on-failure destination with DDBStreamBatchInfo."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from router.config import load_config_text
from router.errors import ConfigErrors
from router.store import SQLStore
from tests.aws import stream_handlers
from tests.fixtures.aws import unique
from tests.helpers import eventually, run_router

pytestmark = pytest.mark.aws


@pytest.fixture(autouse=True)
def events() -> Iterator[list[dict[str, Any]]]:
    stream_handlers.EVENTS.clear()
    yield stream_handlers.EVENTS
    stream_handlers.EVENTS.clear()


async def make_table(dynamodb: Any) -> tuple[str, str]:
    """A table with a NEW_AND_OLD_IMAGES stream: (name, stream ARN)."""
    name = unique("orders")
    response = await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    return name, str(response["TableDescription"]["LatestStreamArn"])


def config(source: str, handler: str = "record", mapping: str = "") -> str:
    return f"""
functions:
  f:
    invoker: python
    handler: tests.aws.stream_handlers:{handler}
mappings:
  - name: orders-table
    function: f
    source:
      type: dynamodb
{source}
      region: us-east-1
      poll_interval: 0.1
      shard_sync_interval: 0.5
      checkpoint_interval: 0.05
    starting_position: TRIM_HORIZON
{mapping}"""


def records() -> list[dict[str, Any]]:
    return [r for e in stream_handlers.EVENTS for r in e["Records"]]


async def test_changes_of_a_table_named_arrive_as_lambda_delivers_them(
    aws: Any, sqlite_store: SQLStore
) -> None:
    async with aws.client("dynamodb") as dynamodb:
        table, stream_arn = await make_table(dynamodb)
        await dynamodb.put_item(
            TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}, "b": {"B": b"\x00\x01"}}
        )
        await dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
        await dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})
        source = f"      table_name: {table}\n      endpoint_url: {aws.endpoint}"
        mapping = "    function_response_types: [ReportBatchItemFailures]"
        async with run_router(config(source, mapping=mapping), sqlite_store):
            await eventually(lambda: len(records()) == 3, what="three changes")
            await asyncio.sleep(0.3)
    got = records()
    assert [r["eventName"] for r in got] == ["INSERT", "MODIFY", "REMOVE"]
    first = got[0]
    assert set(first) == {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    }
    assert first["eventSource"] == "aws:dynamodb"
    assert first["eventVersion"] == "1.1"
    assert first["eventSourceARN"] == stream_arn
    assert first["awsRegion"] == "us-east-1"
    change = first["dynamodb"]
    assert set(change) == {
        "ApproximateCreationDateTime",
        "Keys",
        "NewImage",
        "SequenceNumber",
        "SizeBytes",
        "StreamViewType",
    }
    assert isinstance(change["ApproximateCreationDateTime"], int)
    assert change["Keys"] == {"pk": {"S": "a"}}
    assert change["NewImage"] == {"pk": {"S": "a"}, "v": {"N": "1"}, "b": {"B": "AAE="}}
    assert change["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert got[1]["dynamodb"]["OldImage"]["v"] == {"N": "1"}
    assert "NewImage" not in got[2]["dynamodb"]
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in got]
    assert sequences == sorted(sequences)


async def test_filters_apply_to_the_record_and_bisect_sends_a_poison_item_away(
    aws: Any, sqlite_store: SQLStore
) -> None:
    async with aws.client("dynamodb") as dynamodb:
        table, stream_arn = await make_table(dynamodb)
        values = ["ok-0", "ok-1", "poison", "ok-3", "skip", "ok-5"]
        for i, value in enumerate(values):
            await dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{i}"}, "v": {"S": value}})
        source = f"      stream_arn: {stream_arn}\n      endpoint_url: {aws.endpoint}"
        mapping = """    batch_size: 10
    maximum_batching_window: 1
    bisect_batch_on_function_error: true
    maximum_retry_attempts: 0
    FilterCriteria:
      Filters:
        - Pattern:
            eventName: [INSERT]
            dynamodb: {NewImage: {v: {S: [{anything-but: skip}]}}}
    destination_config:
      on_failure:
        destination: table"""
        async with run_router(config(source, "item_poison", mapping), sqlite_store):
            row = await sqlite_store.get_mapping_by_name("orders-table")
            assert row is not None

            async def failed_one() -> list[Any]:
                return await sqlite_store.list_failed_events(mapping_uuid=row.uuid)

            failed = await eventually(failed_one, timeout=30, what="the poison item given up")
            await eventually(
                lambda: (
                    {"ok-0", "ok-1", "ok-3", "ok-5"}
                    <= {
                        r["dynamodb"]["NewImage"]["v"]["S"]
                        for e in stream_handlers.EVENTS
                        if not any(
                            x["dynamodb"]["NewImage"]["v"]["S"] == "poison" for x in e["Records"]
                        )
                        for r in e["Records"]
                    }
                ),
                what="the good items delivered",
            )
    seen = {r["dynamodb"]["NewImage"]["v"]["S"] for r in records()}
    assert "skip" not in seen
    assert len(failed) == 1
    record = failed[0].payload
    info = record["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    assert info["streamArn"] == stream_arn
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert set(info) == {
        "shardId",
        "startSequenceNumber",
        "endSequenceNumber",
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
        "batchSize",
        "streamArn",
    }
    [original] = record["payload"]["Records"]
    assert original["dynamodb"]["NewImage"]["v"] == {"S": "poison"}
    assert original["dynamodb"]["SequenceNumber"] == info["startSequenceNumber"]


def test_the_brief_yaml_and_its_errors() -> None:
    text = """
functions:
  f: {invoker: python, handler: tests.aws.stream_handlers:record}
mappings:
  - name: orders-table
    function: f
    source:
      type: dynamodb
      table_name: orders
      endpoint_url: http://127.0.0.1:4566
      region: us-east-1
    starting_position: TRIM_HORIZON
    function_response_types: [ReportBatchItemFailures]
"""
    mapping = load_config_text(text, "t.yaml").mappings[0]
    assert mapping.report_batch_item_failures
    assert mapping.batch_size == 100
    both = text.replace(
        "table_name: orders",
        "table_name: orders\n      Stream: arn:aws:dynamodb:us-east-1:1:table/orders/stream/x",
    )
    with pytest.raises(ConfigErrors, match="set table_name or stream_arn"):
        load_config_text(both, "t.yaml")
    at = text.replace("starting_position: TRIM_HORIZON", "starting_position: AT_TIMESTAMP")
    with pytest.raises(ConfigErrors, match="must be one of TRIM_HORIZON, LATEST"):
        load_config_text(at, "t.yaml")
