"""The directory source with real files, the real watcher and the real store."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.directory import DirectorySettings, DirectorySource, FileVersion
from connectors.s3_events import encode_key
from router.abc import SourceContext, Store
from router.lag import Lag, lag_of
from router.models import MappingConfig, Record, SourceKind, SourceSpec
from router.store import SQLStore
from tests.sources.fakes import RecordingSink


def make_source(
    store: Store, mapping_uuid: str, replica: str = "replica-1", **settings: Any
) -> DirectorySource:
    parsed = DirectorySettings.model_validate(settings)
    mapping = MappingConfig(
        name="uploads",
        function="ingest",
        source=SourceSpec(type="directory", settings=parsed),
        uuid=mapping_uuid,
    )
    return DirectorySource(parsed, SourceContext(mapping=mapping, store=store, replica_id=replica))


@contextlib.asynccontextmanager
async def running(source: DirectorySource, sink: RecordingSink) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(sink))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


def keys(records: list[Record]) -> list[str]:
    return [r.data["s3"]["object"]["key"] for r in records]


async def until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
def mapping_uuid() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """The watched folder (beside, not around, the SQLite store file)."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("Happy Face.jpg", "Happy+Face.jpg"),
        ("reports/2024/q1 final.csv", "reports/2024/q1+final.csv"),
        ("über/naïve.txt", "%C3%BCber/na%C3%AFve.txt"),
        ("a+b=c&d.txt", "a%2Bb%3Dc%26d.txt"),
        ("safe-_.~chars", "safe-_.~chars"),
    ],
)
def test_key_encoding(key: str, encoded: str) -> None:
    assert encode_key(key) == encoded


async def test_dropped_file_becomes_one_s3_event(
    sqlite_store: SQLStore, tmp_path: Path, mapping_uuid: str
) -> None:
    folder = tmp_path / "my-bucket"
    source = make_source(sqlite_store, mapping_uuid, path=str(folder))
    sink = RecordingSink()
    async with running(source, sink):
        await until(lambda: _exists(folder))  # created by the source
        target = folder / "sub dir" / "Happy Face ü.txt"
        target.parent.mkdir()
        dropped = time.monotonic()
        target.write_bytes(b"hello world")
        (record,) = await sink.wait_for(1, timeout=5)
        latency = time.monotonic() - dropped
    assert latency < 2.0
    stat = target.stat()
    etag = hashlib.md5(b"hello world").hexdigest()
    event = record.data
    assert set(event) == {
        "eventVersion",
        "eventSource",
        "awsRegion",
        "eventTime",
        "eventName",
        "userIdentity",
        "requestParameters",
        "responseElements",
        "s3",
    }
    assert event["eventVersion"] == "2.1"
    assert event["eventSource"] == "aws:s3"
    assert event["awsRegion"] == "us-east-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["eventTime"])
    assert event["eventName"] == "ObjectCreated:Put"
    assert event["userIdentity"]["principalId"]
    assert event["requestParameters"] == {"sourceIPAddress": "127.0.0.1"}
    assert re.fullmatch(r"[0-9A-F]{16}", event["responseElements"]["x-amz-request-id"])
    assert event["responseElements"]["x-amz-id-2"]
    assert event["s3"] == {
        "s3SchemaVersion": "1.0",
        "configurationId": "uploads",
        "bucket": {
            "name": "my-bucket",
            "ownerIdentity": {"principalId": event["userIdentity"]["principalId"]},
            "arn": "arn:aws:s3:::my-bucket",
        },
        "object": {
            "key": "sub+dir/Happy+Face+%C3%BC.txt",
            "size": 11,
            "eTag": etag,
            "sequencer": f"{stat.st_mtime_ns:016X}",
        },
    }
    assert record.lane == "sub dir/Happy Face ü.txt"
    assert record.position == FileVersion("sub dir/Happy Face ü.txt", stat.st_mtime_ns, 11, etag)
    assert source.build_event([record]) == {"Records": [event]}
    assert DirectorySource.traits.kind is SourceKind.ASYNC
    assert DirectorySource.traits.batch_size_max == 1


async def _exists(path: Path) -> bool:
    return path.is_dir()


async def test_prefix_suffix_hidden_and_partial_files(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox), prefix="in/", suffix=".csv")
    sink = RecordingSink()
    for folder in ("in/deep", "out", "in/.cache"):
        (inbox / folder).mkdir(parents=True)
    async with running(source, sink):
        for name in (
            "in/b.txt",
            "out/c.csv",
            "in/.hidden.csv",
            "in/.cache/e.csv",
            "in/upload.csv.tmp",
            "in/upload.csv.part",
            "in/backup.csv~",
            "top.csv",
            "in/a.csv",
            "in/deep/d.csv",
        ):
            (inbox / name).write_text(name)
        records = await sink.wait_for(2)
        await asyncio.sleep(0.5)  # give an unwanted third event time to show up
    assert sorted(keys(records)) == ["in/a.csv", "in/deep/d.csv"]
    assert len(sink.records) == 2


async def test_hidden_files_delivered_when_asked(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox), ignore_hidden=False)
    sink = RecordingSink()
    async with running(source, sink):
        (inbox / ".env").write_text("x")
        (inbox / "data.part").write_text("y")
        records = await sink.wait_for(2)
    assert sorted(keys(records)) == [".env", "data.part"]


async def test_non_recursive_ignores_subfolders(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    (inbox / "sub").mkdir()
    (inbox / "sub" / "old.txt").write_text("old")
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox), recursive=False)
    sink = RecordingSink()
    async with running(source, sink):
        (inbox / "sub" / "new.txt").write_text("new")
        (inbox / "top.txt").write_text("top")
        records = await sink.wait_for(1)
        await asyncio.sleep(0.5)
    assert keys(records) == ["top.txt"]
    assert len(sink.records) == 1


async def test_restart_delivers_only_new_changed_and_unacked_files(
    store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    first = make_source(store, mapping_uuid, path=str(inbox))
    sink = RecordingSink()
    async with running(first, sink):
        (inbox / "acked.txt").write_text("one")
        (acked,) = await sink.wait_for(1)
        await first.ack([acked])
        (inbox / "unacked.txt").write_text("two")
        await sink.wait_for(2)  # in flight when the router stops: not acked
    # While the router is down: a new file, a changed file, a deleted one.
    (inbox / "while-down.txt").write_text("three")
    (inbox / "acked.txt").write_text("one, changed")
    checkpoints = await store.get_checkpoints(mapping_uuid)
    assert set(checkpoints) == {"acked.txt"}

    second = make_source(store, mapping_uuid, path=str(inbox))
    sink2 = RecordingSink()
    async with running(second, sink2):
        records = await sink2.wait_for(3)
        await asyncio.sleep(0.5)
        assert len(sink2.records) == 3
        await second.ack(records)
    assert sorted(keys(records)) == ["acked.txt", "unacked.txt", "while-down.txt"]
    changed = next(r for r in records if r.lane == "acked.txt")
    assert changed.data["s3"]["object"]["eTag"] == hashlib.md5(b"one, changed").hexdigest()
    assert changed.data["s3"]["object"]["eTag"] != acked.data["s3"]["object"]["eTag"]
    assert changed.data["eventName"] == "ObjectCreated:Put"

    third = make_source(store, mapping_uuid, path=str(inbox))
    sink3 = RecordingSink()
    (inbox / "while-down.txt").unlink()
    async with running(third, sink3):
        (inbox / "marker.txt").write_text("m")
        assert keys(await sink3.wait_for(1)) == ["marker.txt"]
    # The deleted file's row went with it.
    assert "while-down.txt" not in await store.get_checkpoints(mapping_uuid)


async def test_changed_file_is_delivered_again(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox))
    sink = RecordingSink()
    async with running(source, sink):
        target = inbox / "report.json"
        target.write_text('{"v": 1}')
        (first,) = await sink.wait_for(1)
        await source.ack([first])
        target.write_text('{"v": 2, "more": true}')
        second = (await sink.wait_for(2))[1]
        target.unlink()

        async def row_gone() -> bool:
            return "report.json" not in await sqlite_store.get_checkpoints(mapping_uuid)

        await until(row_gone)
    old, new = first.data["s3"]["object"], second.data["s3"]["object"]
    assert new["key"] == old["key"] == "report.json"
    assert new["eTag"] != old["eTag"]
    assert int(new["sequencer"], 16) > int(old["sequencer"], 16)
    assert new["size"] == len('{"v": 2, "more": true}')


async def test_a_file_is_announced_only_once_it_settled(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox), settle=0.6)
    sink = RecordingSink()
    async with running(source, sink):
        with (inbox / "big.bin").open("wb") as f:
            f.write(b"a" * 1000)
            f.flush()
            await asyncio.sleep(0.2)  # a slow writer, still inside the settle time
            f.write(b"b" * 1000)
        (inbox / "gone.bin").write_bytes(b"short-lived")
        (inbox / "gone.bin").unlink()
        (record,) = await sink.wait_for(1)
        await asyncio.sleep(0.8)
    assert record.data["s3"]["object"]["size"] == 2000
    assert record.data["s3"]["object"]["eTag"] == hashlib.md5(b"a" * 1000 + b"b" * 1000).hexdigest()
    assert keys(sink.records) == ["big.bin"]


async def test_only_the_lease_holder_watches(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    a = make_source(sqlite_store, mapping_uuid, "a", path=str(inbox), lease_ttl=1)
    b = make_source(sqlite_store, mapping_uuid, "b", path=str(inbox), lease_ttl=1)
    sink_a, sink_b = RecordingSink(), RecordingSink()
    async with contextlib.AsyncExitStack() as stack:
        async with running(a, sink_a):
            (inbox / "one.txt").write_text("1")
            await a.ack(await sink_a.wait_for(1))  # a holds the lease
            await stack.enter_async_context(running(b, sink_b))
            (inbox / "two.txt").write_text("2")
            await sink_a.wait_for(2)  # seen by a only; in flight, never acked
            await asyncio.sleep(0.5)  # b keeps asking for the lease meanwhile
            assert sink_b.records == []
        # a stopped and released its lease: b takes over.
        (inbox / "three.txt").write_text("3")
        await sink_b.wait_for(2)
    assert keys(sink_a.records) == ["one.txt", "two.txt"]
    assert sorted(keys(sink_b.records)) == ["three.txt", "two.txt"]


def test_settings() -> None:
    settings = DirectorySettings.model_validate({"path": "inbox"})
    assert (settings.recursive, settings.ignore_hidden, settings.region) == (
        True,
        True,
        "us-east-1",
    )
    assert settings.settle == pytest.approx(0.2)
    with pytest.raises(ValueError, match="Extra inputs"):
        DirectorySettings.model_validate({"path": "inbox", "glob": "*.csv"})


@contextlib.asynccontextmanager
async def supervised(source: DirectorySource, sink: RecordingSink) -> AsyncIterator[None]:
    """``source.run`` under the sink's supervisor, as the pipeline runs it."""
    task = asyncio.create_task(sink.supervisor.run(lambda: source.run(sink)))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.aclose()


async def test_a_file_name_that_is_not_utf8_is_rejected_once_and_blocks_nothing(
    store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    bad = os.fsdecode(bytes(inbox) + b"/caf\xe9.csv")  # Latin-1, as an old Windows share
    Path(bad).write_text("1")
    (inbox / "after.csv").write_text("2")
    source = make_source(store, mapping_uuid, path=str(inbox))
    sink = RecordingSink()
    async with running(source, sink):
        (record,) = await sink.wait_for(1)
        await source.ack([record])
        (inbox / "later.csv").write_text("3")
        await sink.wait_for(2)
        Path(os.fsdecode(bytes(inbox) + b"/\xff\xfe.csv")).write_text("4")  # while running
        await until(lambda: _count(sink.rejected, 2))
        remembered = {"caf\\xe9.csv", "\\xff\\xfe.csv"}
        await until(lambda: _has_checkpoints(store, mapping_uuid, remembered))
    assert keys(sink.records) == ["after.csv", "later.csv"]
    (item, reason), (second, _) = sink.rejected
    assert item["key"] == "caf\\xe9.csv"
    assert item["path"] == f"{inbox}/caf\\xe9.csv"
    assert item["bucket"] == "inbox" and item["size"] == 1
    assert "not valid UTF-8" in reason and "rename" in reason
    assert second["key"] == "\\xff\\xfe.csv"
    assert sink.results == []  # nothing failed: the mapping is fine

    # Remembered: a restart neither rejects it again nor delivers it.
    again = make_source(store, mapping_uuid, path=str(inbox))
    sink2 = RecordingSink()
    async with running(again, sink2):
        (inbox / "marker.csv").write_text("5")
        await sink2.wait_for(1)
        await asyncio.sleep(0.3)
    assert sorted(keys(sink2.records)) == ["later.csv", "marker.csv"]  # later.csv: never acked
    assert sink2.rejected == []


async def test_a_key_longer_than_s3_allows_is_rejected(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    deep = inbox
    for i in range(5):
        deep = deep / (f"{i}" * 240)
    deep.mkdir(parents=True)
    (deep / "file.txt").write_text("x")  # a 1213-byte key
    (inbox / "short.txt").write_text("y")
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox))
    sink = RecordingSink()
    async with running(source, sink):
        await sink.wait_for(1)
        await until(lambda: _count(sink.rejected, 1))
    assert keys(sink.records) == ["short.txt"]
    assert "1213 bytes long" in sink.rejected[0][1]


async def test_an_unreadable_file_is_rejected_and_delivered_once_it_can_be_read(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connectors.directory as directory

    readable = asyncio.Event()
    real_md5 = directory._md5

    def md5(path: Path) -> str:
        if path.name == "locked.txt" and not readable.is_set():
            raise PermissionError(13, "Permission denied")
        return real_md5(path)

    monkeypatch.setattr(directory, "_md5", md5)
    (inbox / "locked.txt").write_text("secret")
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox))
    sink = RecordingSink()
    async with running(source, sink):
        await until(lambda: _count(sink.rejected, 1))
        (inbox / "open.txt").write_text("o")
        await sink.wait_for(1)
        readable.set()  # the operator fixed the permissions and touched the file
        os.utime(inbox / "locked.txt")
        await sink.wait_for(2)
    assert keys(sink.records) == ["open.txt", "locked.txt"]
    assert sink.rejected[0][1] == "cannot read the file: Permission denied"


async def test_a_lost_lease_is_waited_for_and_taken_back(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    source = make_source(sqlite_store, mapping_uuid, "a", path=str(inbox), lease_ttl=1)
    sink = RecordingSink()
    lease = f"directory:{mapping_uuid}"
    async with supervised(source, sink):
        (inbox / "one.txt").write_text("1")
        await source.ack(await sink.wait_for(1))
        # Another replica took the lease while this one could not renew it (paused, say).
        async with sqlite_store.engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE leases SET owner = 'b', expires_at = :later WHERE key = :key"),
                {"later": datetime.now(UTC) + timedelta(hours=1), "key": lease},
            )
        await until(lambda: _any(sink.results, "was taken over by another replica"))
        (inbox / "two.txt").write_text("2")  # b's to deliver: a waits
        await asyncio.sleep(1.0)
        assert keys(sink.records) == ["one.txt"]
        await sqlite_store.release_lease(lease, "b")  # b stopped
        await sink.wait_for(2, timeout=10)
    assert keys(sink.records) == ["one.txt", "two.txt"]
    assert sink.results[0].startswith("PROBLEM: directory ")


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _any(results: list[str], text: str) -> bool:
    return any(text in r for r in results)


async def _has_checkpoints(store: Store, mapping_uuid: str, wanted: set[str]) -> bool:
    return wanted <= set(await store.get_checkpoints(mapping_uuid))


async def test_files_waiting_is_the_lag(
    sqlite_store: SQLStore, inbox: Path, mapping_uuid: str
) -> None:
    """``router_directory_files_waiting``: files found and not acknowledged yet."""
    source = make_source(sqlite_store, mapping_uuid, path=str(inbox))
    sink = RecordingSink()

    def waiting() -> float:
        (family,) = source.metrics()
        assert family.name == "router_directory_files_waiting"
        ((_, labels, value),) = family.samples
        assert labels == {"mapping": "uploads"}
        return value

    async with running(source, sink):
        assert waiting() == 0
        for name in ("a.csv", "b.csv", "c.csv"):
            (inbox / name).write_text(name)
        records = await sink.wait_for(3)
        assert waiting() == 3
        await source.ack(records[:2])
        assert lag_of(source.metrics()) == Lag(1.0, "files waiting")
        await source.ack(records[2:])
        assert waiting() == 0
