"""Outages of what a running `router run` talks to, each ended without restarting the router:
the invoker down for 20 s, an on-failure destination down, the Kafka broker stopped and
started again. Nothing is lost, order per lane is kept, and the mapping shows the problem
while it lasts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    FUNCTIONS,
    Deliveries,
    HttpEndpoint,
    RouterProcess,
    kafka_mapping,
    seq,
    statuses,
    until,
    write_workdir,
)
from tests.fixtures.kafka import TopicFactory, tansu_broker
from tests.kafka.helpers import produce

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]


async def _produce(broker: str, topic: str, lanes: dict[str, list[str]]) -> None:
    for partition, ids in lanes.items():
        await produce(broker, topic, [i.encode() for i in ids], partition=int(partition))


def _merge(*parts: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in parts:
        for lane, ids in part.items():
            out.setdefault(lane, []).extend(ids)
    return out


async def test_the_invoker_down_for_20_seconds(
    tmp_path: Path, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(2)
    endpoint = HttpEndpoint()
    await endpoint.start()
    config = f"""\
functions:
  remote:
    invoker: http
    url: {endpoint.url}
    timeout: 5
    connect_timeout: 1
mappings:
""" + kafka_mapping("stream", kafka_broker, topic).replace("function: sink", "function: remote")
    write_workdir(tmp_path, config)
    store = f"sqlite:///{tmp_path / 'router.db'}"
    router = RouterProcess(tmp_path, store)
    before = {p: seq(f"before-p{p}", 50) for p in ("0", "1")}
    during = {p: seq(f"during-p{p}", 50) for p in ("0", "1")}
    after = {p: seq(f"after-p{p}", 50) for p in ("0", "1")}
    everything = _merge(before, during, after)
    try:
        await asyncio.to_thread(router.start)
        await _produce(kafka_broker, topic, before)
        await until(lambda: len(endpoint.firsts().get("1", [])) >= 50, 30, "before delivered")
        await endpoint.stop()
        down = time.monotonic()
        await _produce(kafka_broker, topic, during)
        await until(
            lambda: _problem(store, "stream", "Cannot connect to host"), 15, "PROBLEM shown"
        )
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - down)))
        await endpoint.start()
        back = time.monotonic()
        await _produce(kafka_broker, topic, after)
        await until(lambda: endpoint.firsts() == everything, 30, "every record, in order")
        recovered = time.monotonic() - back
        await until(lambda: _status(store, "stream", "OK"), 10, "OK again")
        assert router.alive and router.starts == 1
    finally:
        code = await asyncio.to_thread(router.stop)
        await endpoint.stop()
    assert code == 0, router.log_text()
    print(f"everything delivered {recovered:.1f}s after the invoker came back")


async def test_an_on_failure_destination_down_blocks_the_lane_and_drops_nothing(
    tmp_path: Path, kafka_broker: str, make_topic: TopicFactory
) -> None:
    topic = await make_topic(1)
    destination = HttpEndpoint()  # not started yet: the destination is down
    mapping = (
        kafka_mapping("stream", kafka_broker, topic, batch_size=1)
        + f"""\
    maximum_retry_attempts: 0
    destination_config:
      on_failure:
        destination: {destination.url}/destination
"""
    )
    write_workdir(tmp_path, FUNCTIONS + mapping)
    store = f"sqlite:///{tmp_path / 'router.db'}"
    router = RouterProcess(tmp_path, store, env={"FAULT_POISON": "poison"})
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    ids = [*seq("ok", 5), "poison-00005", *seq("ok", 14, start=6)]
    try:
        await asyncio.to_thread(router.start)
        await _produce(kafka_broker, topic, {"0": ids})
        await until(lambda: deliveries.ids("kafka") >= set(ids[:5]), 30, "records before it")
        await until(
            lambda: _problem(store, "stream", "on-failure destination unavailable"),
            15,
            "PROBLEM shown",
        )
        await asyncio.sleep(2.0)
        # The lane waits for the destination: nothing behind the failed record overtook it.
        assert deliveries.ids("kafka") == set(ids[:5])
        await destination.start()
        await until(lambda: deliveries.ids("kafka") >= set(ids) - {ids[5]}, 30, "the rest")
        assert router.alive and router.starts == 1
    finally:
        code = await asyncio.to_thread(router.stop)
        await destination.stop()
    assert code == 0, router.log_text()
    assert len(destination.received) == 1
    (record,) = destination.received
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert deliveries.firsts("kafka") == {"0": [i for i in ids if i != ids[5]]}


async def test_the_kafka_broker_stopped_and_started_again(tmp_path: Path) -> None:
    """The test broker keeps its data in memory: a restarted broker is empty. What is
    checked is what a router can do: it delivers everything before the stop, comes back by
    itself, and delivers everything the broker holds after it, in order."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from tests.fixtures.procs import free_port

    port = free_port()
    topic = "restarts"
    address = f"127.0.0.1:{port}"

    async def create_topic() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=address)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()

    write_workdir(tmp_path, FUNCTIONS + kafka_mapping("stream", address, topic))
    store = f"sqlite:///{tmp_path / 'router.db'}"
    router = RouterProcess(tmp_path, store)
    deliveries = Deliveries(tmp_path / "deliveries.txt")
    before = {p: seq(f"before-p{p}", 60) for p in ("0", "1")}
    after = {p: seq(f"after-p{p}", 30) for p in ("0", "1")}
    try:
        with tansu_broker(port):
            await create_topic()
            await asyncio.to_thread(router.start)
            await _produce(address, topic, before)
            await until(
                lambda: deliveries.firsts("kafka") == before, 60, "every record before the stop"
            )
        await until(lambda: _problem(store, "stream", "kafka"), 60, "PROBLEM shown")
        await asyncio.sleep(3)
        with tansu_broker(port):
            back = time.monotonic()
            await create_topic()
            await _produce(address, topic, after)
            await until(
                lambda: (
                    {
                        lane: [i for i in ids if i.startswith("after")]
                        for lane, ids in deliveries.firsts("kafka").items()
                    }
                    == after
                ),
                90,
                "every record after the restart, in order",
            )
            recovered = time.monotonic() - back
            await until(lambda: _status(store, "stream", "OK"), 30, "OK again")
            assert router.alive and router.starts == 1
            code = await asyncio.to_thread(router.stop)
    finally:
        if router.alive:
            await asyncio.to_thread(router.stop)
    assert code == 0, router.log_text()
    print(f"records after the restart delivered within {recovered:.1f}s")


async def _problem(store: str, mapping: str, text: str) -> bool:
    result = (await statuses(store)).get(mapping, "")
    return result.startswith("PROBLEM") and text in result


async def _status(store: str, mapping: str, expected: str) -> bool:
    return (await statuses(store)).get(mapping) == expected
