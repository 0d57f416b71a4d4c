"""Helpers for the Kinesis tests: streams on the emulator, records put in, what the
handlers saw."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.aws import stream_handlers
from tests.fixtures.aws import unique


async def make_stream(kinesis: Any, shards: int = 1, prefix: str = "clicks") -> str:
    name = unique(prefix)
    await kinesis.create_stream(StreamName=name, ShardCount=shards)
    summary = await kinesis.describe_stream_summary(StreamName=name)
    return str(summary["StreamDescriptionSummary"]["StreamARN"])


async def put(kinesis: Any, arn: str, items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Put ``(partition key, data)`` pairs in order (one PutRecords call per 500); the
    answers (ShardId, SequenceNumber) in order."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(items), 500):
        chunk = items[i : i + 500]
        response = await kinesis.put_records(
            StreamARN=arn, Records=[{"PartitionKey": k, "Data": d.encode()} for k, d in chunk]
        )
        out.extend(response["Records"])
    return out


def delivered(events: list[dict[str, Any]] | None = None) -> list[tuple[str, str, str]]:
    """``(shard id, partition key, data)`` of every record the handlers saw, in order."""
    out = []
    for event in stream_handlers.EVENTS if events is None else events:
        for r in event["Records"]:
            shard = r["eventID"].split(":", 1)[0]
            out.append((shard, r["kinesis"]["partitionKey"], stream_handlers.data_of(r)))
    return out


def kinesis_config(
    arn: str,
    endpoint: str,
    handler: str = "record",
    mapping: str = "",
    source: str = "",
    timeout: float = 3.0,
) -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: tests.aws.stream_handlers:{handler}
    timeout: {timeout}
mappings:
  - name: clicks
    function: fn
    source:
      type: kinesis
      stream_arn: {arn}
      endpoint_url: {endpoint}
      region: us-east-1
      poll_interval: 0.1
      shard_sync_interval: 0.5
      checkpoint_interval: 0.05
{source}
{mapping}"""


async def settle(seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)


# A handler module for `router run` subprocesses: one line per record
# (shard, sequence number, replica) in $STREAM_REPLICA_FILE.
RECORDING_HANDLER = """
import os
import time

OUT = os.environ["STREAM_REPLICA_FILE"]
REPLICA = os.environ["ROUTER_REPLICA_ID"]

def handle(event, context):
    lines = []
    for r in event["Records"]:
        shard = r["eventID"].split(":", 1)[0]
        lines.append(f"{shard} {r['kinesis']['sequenceNumber']} {REPLICA}\\n")
    with open(OUT, "a") as f:
        f.write("".join(lines))
    time.sleep(0.05)
    return {}
"""


def deliveries(path: Path) -> list[tuple[str, int, str]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:  # a line cut by the kill is not a delivery
            out.append((parts[0], int(parts[1]), parts[2]))
    return out
