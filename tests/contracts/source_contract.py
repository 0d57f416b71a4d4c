"""The Source contract: what every connector's source does, run against its real service.

Each connector runs the same tests (:class:`SourceContract`) through a small adapter
(:class:`SourceAdapter`) that knows only its own service: how to produce records into it,
how to build a source over them, and how to read a record's body and lane back. What the
tests check is what the router relies on (:mod:`router.abc`):

* **at-least-once across a restart**: records a source put but that were never acked are
  read again by a new source over the same mapping; acked ones are not.
* **ack only after delivery**: the source forgets nothing by itself; without ``ack`` every
  record comes again after a restart.
* **order per lane**: records of one lane are put in the order they were produced.
* **revoke**: a source that gives lanes up to another reader (a Kafka rebalance) calls
  ``Sink.revoke`` for them first, and the new owner reads what was not acked.
* **release**: a queue source redelivers released records while it keeps running.
* **idempotent aclose**: ``aclose`` twice, or without ``run``, is fine.
* **a source error is retried**: when ``run`` fails, the supervisor calls ``run`` again on
  the same instance and the records read before the failure still come.

Plugging in a new connector: write ``tests/contracts/test_<name>_source.py`` with a
subclass of :class:`SourceAdapter` for the service (produce, build a source, body, lane and
the capability flags) and a test class::

    class TestRabbitSource(SourceContract):
        @pytest.fixture
        async def adapter(self, rabbit_url: str, sqlite_store: SQLStore) -> AsyncIterator[Adapter]:
            adapter = RabbitAdapter(rabbit_url, sqlite_store)
            await adapter.setup()
            try:
                yield adapter
            finally:
                await adapter.cleanup()

Every test of the contract then runs against the service; a test that does not apply to the
source's kind (``release`` for a stream) is skipped and says why. A capability flag is set
from the source's traits where one says it (``releases`` from ``SourceKind.QUEUE``), so an
adapter cannot claim less than the source promises.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import ClassVar

import pytest

from router.abc import Source
from router.models import Record, SourceKind
from tests.contracts.sink import ContractSink

Item = tuple[str, str]
"""``(lane, body)``: one record to produce; records of one lane are produced in order."""


class SourceAdapter(ABC):
    """What the contract needs to know about one connector and its service."""

    ordered: ClassVar[bool] = True
    """Records produced into one lane are put in that order (False: the source has no
    lanes that keep order, e.g. an SQS standard queue)."""
    revokes: ClassVar[bool] = False
    """Another reader of the same mapping takes lanes over (see :meth:`second_reader`)."""
    redelivery: ClassVar[float] = 30.0
    """Seconds within which records that were not acked come again (a queue's visibility
    timeout, a group's rebalance)."""
    quiet: ClassVar[float] = 2.0
    """Seconds a test waits to see that something does not come again."""

    @abstractmethod
    async def produce(self, items: Sequence[Item]) -> None:
        """Write ``items`` into the service, in order."""

    @abstractmethod
    def source(self, *, replica: str = "replica-1") -> Source:
        """A new source instance over the same mapping (same uuid, store, group, queue)."""

    @abstractmethod
    def body(self, record: Record) -> str:
        """The body ``produce`` wrote for ``record``."""

    def lane(self, record: Record) -> Hashable:
        """The record's lane as the source set it."""
        return record.lane

    def kind(self) -> SourceKind:
        source = self.source()
        return type(source).traits_for(source.settings).kind


@contextlib.asynccontextmanager
async def running(source: Source, sink: ContractSink) -> AsyncIterator[asyncio.Task[bool]]:
    """Run ``source`` under the sink's supervisor for the block (as the router does: started
    again after a failure); cancel it and ``aclose`` it afterwards."""
    task = asyncio.create_task(sink.supervisor.run(lambda: source.run(sink)))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


def bodies(adapter: SourceAdapter, records: Sequence[Record]) -> list[str]:
    return [adapter.body(r) for r in records]


def items(lanes: Sequence[str], count: int, prefix: str = "m") -> list[Item]:
    """``count`` records per lane, interleaved: (a, m-a-0), (b, m-b-0), (a, m-a-1)..."""
    return [(lane, f"{prefix}-{lane}-{i}") for i in range(count) for lane in lanes]


class SourceContract:
    """The tests; a subclass provides the ``adapter`` fixture."""

    @pytest.fixture
    def adapter(self) -> SourceAdapter:
        raise NotImplementedError("a connector's contract test class provides this fixture")

    async def test_delivers_what_was_produced(self, adapter: SourceAdapter) -> None:
        produced = items(["a", "b"], 3)
        await adapter.produce(produced)
        sink = ContractSink()
        async with running(adapter.source(), sink):
            await sink.wait_for(lambda: len(sink.records) >= len(produced), "every record")
            assert sorted(bodies(adapter, sink.records)) == sorted(b for _, b in produced)

    async def test_unacked_records_come_again_after_a_restart(self, adapter: SourceAdapter) -> None:
        """At-least-once across a restart; acked records are forgotten."""
        produced = items(["a"], 6)
        await adapter.produce(produced)
        first = ContractSink()
        source = adapter.source()
        async with running(source, first):
            await first.wait_for(lambda: len(first.records) >= len(produced), "every record")
            acked = first.records[:3]
            await source.ack(acked)
        unacked = {b for _, b in produced} - set(bodies(adapter, acked))
        source = adapter.source()
        second = ContractSink(acker=source.ack)
        async with running(source, second):
            await second.wait_for(
                lambda: unacked <= set(bodies(adapter, second.records)),
                "the records that were not acked",
                timeout=adapter.redelivery + 30,
            )
            await asyncio.sleep(adapter.quiet)
            again = set(bodies(adapter, second.records)) & set(bodies(adapter, acked))
            assert not again, f"acked records delivered again: {sorted(again)}"

    async def test_nothing_is_forgotten_without_ack(self, adapter: SourceAdapter) -> None:
        """Ack only after delivery: a source that put records and got no ack for them has
        forgotten none of them."""
        produced = items(["a", "b"], 3)
        await adapter.produce(produced)
        first = ContractSink()
        async with running(adapter.source(), first):
            await first.wait_for(lambda: len(first.records) >= len(produced), "every record")
        source = adapter.source()
        second = ContractSink(acker=source.ack)
        async with running(source, second):
            await second.wait_for(
                lambda: {b for _, b in produced} <= set(bodies(adapter, second.records)),
                "every record again",
                timeout=adapter.redelivery + 30,
            )

    async def test_order_per_lane(self, adapter: SourceAdapter) -> None:
        if not adapter.ordered:
            pytest.skip("this source's lanes do not keep order")
        produced = items(["a", "b"], 5)
        await adapter.produce(produced)
        sink = ContractSink()
        async with running(adapter.source(), sink):
            await sink.wait_for(lambda: len(sink.records) >= len(produced), "every record")
        for lane in ("a", "b"):
            mine = [r for r in sink.records if adapter.body(r).startswith(f"m-{lane}-")]
            assert bodies(adapter, mine) == [b for name, b in produced if name == lane]
            # A source may put two produced lanes into one of its own (two keys on one
            # partition), never one produced lane into two.
            assert len({adapter.lane(r) for r in mine}) == 1, f"lane {lane} was split"

    async def test_revoked_lanes_go_to_the_next_owner(self, adapter: SourceAdapter) -> None:
        if not adapter.revokes:
            pytest.skip("no other reader takes this source's lanes over")
        produced = items(["a", "b"], 3)
        await adapter.produce(produced)
        first = ContractSink()
        async with running(adapter.source(replica="replica-1"), first):
            await first.wait_for(lambda: len(first.records) >= len(produced), "every record")
            second = ContractSink()
            async with running(adapter.source(replica="replica-2"), second):
                await first.wait_for(lambda: bool(first.revoked), "a revoke")
                await second.wait_for(lambda: bool(second.records), "the taken-over lanes")
                taken = {adapter.lane(r) for r in second.records}
                revoked = set().union(*first.revoked)
                assert taken <= revoked, f"read lanes {taken} that were not revoked {revoked}"
                wanted = {adapter.body(r) for r in first.records if adapter.lane(r) in taken}
                await second.wait_for(
                    lambda: wanted <= set(bodies(adapter, second.records)),
                    "every unacked record of the taken-over lanes",
                )

    async def test_released_records_come_again(self, adapter: SourceAdapter) -> None:
        if adapter.kind() is not SourceKind.QUEUE:
            pytest.skip("only queue sources get release()")
        produced = items(["a"], 4)
        await adapter.produce(produced)
        sink = ContractSink()
        source = adapter.source()
        async with running(source, sink):
            await sink.wait_for(lambda: len(sink.records) >= len(produced), "every record")
            released = [r for r in sink.records if adapter.body(r).endswith(("-0", "-1"))]
            await source.ack([r for r in sink.records if r not in released])
            await source.release(released)
            sink.acker = source.ack  # a FIFO group's second message waits for the first
            await sink.wait_for(
                lambda: len(sink.records) >= len(produced) + len(released),
                "the released records again",
                timeout=adapter.redelivery + 30,
            )
            assert sorted(bodies(adapter, sink.records[len(produced) :])) == sorted(
                bodies(adapter, released)
            )

    async def test_aclose_is_idempotent(self, adapter: SourceAdapter) -> None:
        await adapter.source().aclose()
        never_run = adapter.source()
        await never_run.aclose()
        await never_run.aclose()
        await adapter.produce(items(["a"], 1))
        sink = ContractSink()
        source = adapter.source()
        async with running(source, sink):
            await sink.wait_for(lambda: bool(sink.records), "a record")
        await source.aclose()
        await source.aclose()

    async def test_a_source_error_is_retried(self, adapter: SourceAdapter) -> None:
        """``run`` fails (here: handing records over): the supervisor shows the problem and
        runs the same instance again, and the records read before the failure still come."""
        produced = items(["a"], 3)
        await adapter.produce(produced)
        source = adapter.source()
        sink = ContractSink(acker=source.ack)
        sink.fail_puts = 1
        async with running(source, sink) as task:
            await sink.wait_for(
                lambda: {b for _, b in produced} <= set(bodies(adapter, sink.records)),
                "every record after the failed put",
                timeout=adapter.redelivery + 30,
            )
            assert sink.failed_puts, "the injected failure did not happen"
            assert any(r.startswith("PROBLEM:") and "injected" in r for r in sink.results)
            assert not task.done()
