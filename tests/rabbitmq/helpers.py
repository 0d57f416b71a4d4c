"""Shared helpers of the RabbitMQ tests: publish, read a queue, handlers that log what they
receive."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from tests.fixtures.rabbitmq import HOST, PORT, URL

HANDLERS = """
import base64, json, os

def _messages(event):
    for key, messages in event["rmqMessagesByQueue"].items():
        for m in messages:
            yield key, m

def _log(event):
    with open(os.environ["RMQ_EVENTS_FILE"], "a") as f:
        for key, m in _messages(event):
            body = base64.b64decode(m["data"]).decode()
            f.write(json.dumps([body, m["redelivered"], m["basicProperties"]["messageId"]]) + "\\n")

def record(event, context):
    with open(os.environ["RMQ_EVENTS_FILE"] + ".events", "a") as f:
        f.write(json.dumps(event) + "\\n")
    _log(event)
    return {}

def fail_once(event, context):
    # Every batch fails the first time any of its messages is seen.
    if any(not m["redelivered"] for _, m in _messages(event)):
        with open(os.environ["RMQ_EVENTS_FILE"] + ".failed", "a") as f:
            f.write(json.dumps([base64.b64decode(m["data"]).decode()
                                for _, m in _messages(event)]) + "\\n")
        raise RuntimeError("first delivery fails")
    _log(event)
    return {}

def poison(event, context):
    if any(b"poison" in base64.b64decode(m["data"]) for _, m in _messages(event)):
        raise ValueError("poison in batch")
    _log(event)
    return {}

def partial(event, context):
    failures = []
    for _, m in _messages(event):
        body = base64.b64decode(m["data"])
        if b"poison" in body or (b"flaky" in body and not m["redelivered"]):
            failures.append({"itemIdentifier": m["basicProperties"]["messageId"]})
    _log(event)
    return {"batchItemFailures": failures}

def slow(event, context):
    import time
    time.sleep(float(os.environ.get("RMQ_SLOW", "0.2")))
    _log(event)
    return {}
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "rmq_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rmq_handlers", raising=False)
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv("RMQ_EVENTS_FILE", str(events))
    return events


def delivered(events: Path) -> list[tuple[str, bool, str | None]]:
    """``(body, redelivered, messageId)`` of every message the handler took, in order."""
    if not events.exists():
        return []
    return [tuple(orjson.loads(line)) for line in events.read_bytes().splitlines() if line]


def bodies(events: Path) -> list[str]:
    return [b for b, _, _ in delivered(events)]


async def publish(
    queue: str, bodies: Sequence[str | bytes], *, vhost: str = "/", **properties: Any
) -> None:
    """Publish each body to ``queue`` (default exchange) with publisher confirms; a
    ``message_id`` property may hold ``{i}``."""
    connection = await aio_pika.connect(host=HOST, port=PORT, virtualhost=vhost)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for i, body in enumerate(bodies):
            props = dict(properties)
            if isinstance(props.get("message_id"), str):
                props["message_id"] = props["message_id"].format(i=i)
            data = body.encode() if isinstance(body, str) else body
            await channel.default_exchange.publish(aio_pika.Message(data, **props), queue)
    finally:
        await connection.close()


async def depth(queue: str, vhost: str = "/") -> tuple[int, int]:
    """``(messages ready, consumers)`` of ``queue``."""
    connection = await aio_pika.connect(host=HOST, port=PORT, virtualhost=vhost)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0
    finally:
        await connection.close()


async def drain(queue: str, vhost: str = "/", timeout: float = 2.0) -> list[bytes]:
    """Consume and ack everything ``queue`` holds now."""
    connection = await aio_pika.connect(host=HOST, port=PORT, virtualhost=vhost)
    got: list[bytes] = []
    try:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        while True:
            message = await q.get(fail=False, timeout=timeout)
            if message is None:
                return got
            got.append(message.body)
            await message.ack()
    finally:
        await connection.close()


def mapping_yaml(
    queue: str, handler: str, *, extra: str = "", source_extra: str = "", vhost: str = "/"
) -> str:
    return f"""
functions:
  fn:
    invoker: python
    handler: rmq_handlers:{handler}
mappings:
  - name: rmq
    function: fn
    batch_size: 10
    maximum_batching_window: 0
    source:
      type: rabbitmq
      url: {URL}
      virtual_host: "{vhost}"
      queues: [{queue}]{source_extra}
{extra}"""
