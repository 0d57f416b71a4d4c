"""``kill -9`` of `router run` in the middle of a batch, for every source: after a restart every
record is delivered at least once, and first deliveries keep the order of each lane."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.aws.util import make_queue
from tests.faults.harness import (
    FUNCTIONS,
    Deliveries,
    RouterProcess,
    at_mapping,
    directory_mapping,
    drop_files,
    kafka_mapping,
    s3_mapping,
    seconds_from_now,
    seq,
    sqs_mapping,
    until,
    write_workdir,
)
from tests.fixtures.aws import unique
from tests.fixtures.kafka import TopicFactory
from tests.kafka.helpers import produce

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@dataclass
class Case:
    """One source: its mapping, how records are produced, what must arrive."""

    kind: str
    config: str = ""
    produce: Callable[[], Awaitable[None]] | None = None
    lanes: dict[str, list[str]] = field(default_factory=dict)
    """lane -> ids in production order."""
    ordered: bool = True

    @property
    def ids(self) -> set[str]:
        return {i for ids in self.lanes.values() for i in ids}


async def _directory(tmp_path: Path) -> Case:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = seq("file", 30)
    case = Case(kind="inbox", config=directory_mapping(), ordered=False)
    case.lanes = {f"{n}.txt": [f"{n}.txt"] for n in names}

    async def go() -> None:
        drop_files(inbox, names)

    case.produce = go
    return case


async def _schedule() -> Case:
    # After the router is up: a loaded machine took 7 s to open the store, and an at() time
    # that passed before its schedule first ran is not fired ("Missed fires" in
    # docs/sources-directory-schedule.md).
    first = seconds_from_now(12)
    config = ""
    lanes = {}
    for i in range(4):
        # 3 s apart: the kill (1.5 s after the first) lands while one fire is in flight.
        when = datetime.fromtimestamp(first.timestamp() + 3 * i, UTC)
        config += at_mapping(f"tick-{i}", when)
        lanes[f"tick-{i}"] = [f"tick-{i}@{when:%Y-%m-%dT%H:%M:%SZ}"]
    return Case(kind="schedule", config=config, lanes=lanes, ordered=False)


async def _kafka(broker: str, make_topic: TopicFactory) -> Case:
    topic = await make_topic(2)
    lanes = {str(p): seq(f"p{p}", 150) for p in (0, 1)}

    async def go() -> None:
        for p, ids in lanes.items():
            await produce(broker, topic, [i.encode() for i in ids], partition=int(p))

    return Case(
        kind="kafka", config=kafka_mapping("stream", broker, topic), produce=go, lanes=lanes
    )


async def _sqs(aws: Any) -> Case:
    async with aws.client("sqs") as sqs:
        url = await make_queue(sqs, unique("kill"), visibility=3, fifo=True)
    lanes = {f"g{g}": seq(f"g{g}", 20) for g in range(3)}

    async def go() -> None:
        async with aws.client("sqs") as sqs:
            for i in range(20):
                entries = [
                    {"Id": f"{g}", "MessageBody": ids[i], "MessageGroupId": g}
                    for g, ids in lanes.items()
                ]
                await sqs.send_message_batch(QueueUrl=url, Entries=entries)

    config = sqs_mapping("queue", aws.endpoint, url, batch_size=5)
    return Case(kind="sqs", config=config, produce=go, lanes=lanes)


async def _s3(aws: Any) -> Case:
    bucket = unique("kill")
    async with aws.client("sqs") as sqs, aws.client("s3") as s3:
        url = await make_queue(sqs, unique("kill-s3"), visibility=3)
        arn = (await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
            "Attributes"
        ]["QueueArn"]
        await s3.create_bucket(Bucket=bucket)
        await s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
    keys = seq("obj", 20)

    async def go() -> None:
        async with aws.client("s3") as s3:
            for key in keys:
                await s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    case = Case(kind=bucket, config=s3_mapping("objects", aws.endpoint, url), produce=go)
    case.lanes = {k: [k] for k in keys}
    case.ordered = False
    return case


async def test_kill_9_directory(tmp_path: Path) -> None:
    await _kill_and_restart(tmp_path, await _directory(tmp_path))


async def test_kill_9_schedule(tmp_path: Path) -> None:
    await _kill_and_restart(tmp_path, await _schedule())


@pytest.mark.kafka
async def test_kill_9_kafka(tmp_path: Path, kafka_broker: str, make_topic: TopicFactory) -> None:
    await _kill_and_restart(tmp_path, await _kafka(kafka_broker, make_topic))


@pytest.mark.aws
async def test_kill_9_sqs_fifo(tmp_path: Path, aws: Any) -> None:
    await _kill_and_restart(tmp_path, await _sqs(aws))


@pytest.mark.aws
async def test_kill_9_s3_notifications(tmp_path: Path, aws: Any) -> None:
    await _kill_and_restart(tmp_path, await _s3(aws))


async def _kill_and_restart(tmp_path: Path, case: Case) -> None:
    write_workdir(tmp_path, FUNCTIONS + case.config)
    # A function that takes a moment: the kill lands while batches are in flight.
    schedule = case.kind == "schedule"
    router = RouterProcess(
        tmp_path,
        f"sqlite:///{tmp_path / 'router.db'}",
        env={"FAULT_DELAY": "2" if schedule else "0.2"},
    )
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    total = len(case.ids)
    try:
        await asyncio.to_thread(router.start)
        if case.produce is not None:
            await case.produce()
        if schedule:
            # The first fire is being invoked: claimed, pending, not acknowledged.
            await asyncio.sleep(max(0.0, _first_fire(case) + 1.5 - _now()))
        else:
            await until(lambda: len(deliveries.ids(case.kind)) >= total // 5, 60, "a fifth")
        await asyncio.to_thread(router.kill)
        assert len(deliveries.ids(case.kind)) < total, "the kill came too late to test anything"
        await asyncio.to_thread(router.start)
        await until(lambda: deliveries.has_all(case.kind, case.ids), 90, "every record")
    finally:
        code = await asyncio.to_thread(router.stop)
    assert code == 0, router.log_text()
    assert deliveries.ids(case.kind) == case.ids
    if case.ordered:
        assert deliveries.firsts(case.kind) == case.lanes


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _first_fire(case: Case) -> float:
    first = min(ids[0].split("@")[1] for ids in case.lanes.values())
    return datetime.strptime(first, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
