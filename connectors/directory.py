"""The ``directory`` source: a local folder acting as an S3 bucket.

Each new or changed file becomes one ``aws:s3`` ``ObjectCreated:Put`` event record, invoked
asynchronously. What was delivered is remembered in the store (checkpoint per key:
``"<mtime_ns>:<size>:<etag>"``), so a restart delivers only files that are new or changed
since, including those that arrived while the router was down.

* The watcher (watchfiles) starts before the folder is scanned, so a file created during
  start-up is seen by one or the other (both see it: the second sighting is dropped).
* A file is announced once its size and mtime have not changed for ``settle`` seconds; a
  file that disappears before that produces no event. Dotfiles (and anything under a dot
  folder) and names ending in ``.tmp``, ``.part`` or ``~`` are partially written files by
  convention and are ignored (``ignore_hidden: false`` delivers them too).
* Several replicas on one store: only the holder of the lease ``directory:<mapping uuid>``
  scans and watches; the others wait for it. A holder that finds its lease taken over (it was
  paused or cut off for longer than ``lease_ttl``) raises LeaseLost; the supervisor starts
  the source again, and it waits for the lease like any other replica.
* A store that is down does not stop the folder being watched: lease renewals and checkpoint
  writes are retried in place (the mapping shows ``PROBLEM: store unavailable while ...``),
  files are still delivered, and their checkpoints are written once the store is back.
* A file that cannot become an S3 event is rejected (``Sink.reject``: logged, counted, sent to
  the on-failure destination) and skipped: a name that is not valid UTF-8 or whose UTF-8 form
  is longer than S3's 1024 bytes (remembered, so it is rejected once, until it is renamed or
  changed), or a file that cannot be read (tried again when the file changes).
* Checkpoint rows of files that are gone from the folder are deleted at start and when the
  watcher reports the deletion, so a file dropped again later with the same name and
  timestamp is delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import ConfigDict, Field

from connectors.s3_events import encode_key, format_time, normalise
from router.abc import MetricFamily, Sink, Source, SourceContext, SourceTraits
from router.errors import LeaseLost, SourceError, StoreError
from router.fswatch import watch
from router.models import PluginSettings, Record, SourceKind
from router.store.checkpoints import CheckpointWriter
from router.supervisor import describe

logger = logging.getLogger(__name__)

PARTIAL_SUFFIXES = (".tmp", ".part", "~")
CHECKPOINT_KEY_MAX = 512
"""Length of the store's checkpoint key column: longer object keys are stored hashed."""
S3_KEY_MAX_BYTES = 1024
WATCH_DEBOUNCE_MS = 100
"""watchfiles' ``debounce``: while changes keep coming, they are handed over this often."""
WATCH_STEP_MS = 50
"""watchfiles' ``step``: changes are handed over once none came for this long."""
INLINE_HASH_BYTES = 64 * 1024
"""Files up to this size are hashed on the event loop (tens of microseconds on a local disk);
larger ones on a thread, so that one big file does not hold up the loop."""
REJECTED_ETAG = "rejected"
"""The etag part of the checkpoint of a file that was rejected rather than delivered."""
PRINCIPAL_ID = "ROUTER"


class DirectorySettings(PluginSettings):
    """YAML keys of ``source: {type: directory}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    """The folder (relative to the router's working directory); created if missing."""
    prefix: str = ""
    """S3 notification filter rule: only keys starting with this."""
    suffix: str = ""
    """S3 notification filter rule: only keys ending with this."""
    recursive: bool = True
    bucket: str | None = None
    """Bucket name in events; defaults to the folder's name."""
    region: str = "us-east-1"
    ignore_hidden: bool = True
    settle: float = Field(default=0.2, ge=0, le=60)
    """Seconds a file must stay unchanged before it is announced."""
    lease_ttl: float = Field(default=30.0, ge=1, le=3600)


@dataclass(frozen=True, slots=True)
class FileVersion:
    """The position of a directory record: which content of which file."""

    key: str
    mtime_ns: int
    size: int
    etag: str

    @property
    def checkpoint(self) -> str:
        return f"{self.mtime_ns}:{self.size}:{self.etag}"


def printable(key: str) -> str:
    """``key`` as text that any store and log can hold: bytes of a file name that are not
    valid UTF-8 (kept by Python as surrogates) become ``\\xNN``."""
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def checkpoint_key(key: str) -> str:
    key = printable(key)
    if len(key) <= CHECKPOINT_KEY_MAX:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an S3 object key, or None."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return (
            "the file name is not valid UTF-8, so it cannot be an S3 object key; "
            "rename the file (e.g. convmv -f latin1 -t utf8) to have it delivered"
        )
    if size > S3_KEY_MAX_BYTES:
        return (
            f"the object key is {size} bytes long in UTF-8, more than S3's "
            f"{S3_KEY_MAX_BYTES}; move the file to a shorter path to have it delivered"
        )
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_dir(path: Path) -> bool:
    # A local stat takes microseconds: not worth a thread hop (also in _stat).
    return path.is_dir()


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return st.st_mtime_ns, st.st_size


def _undecodable_path(error: BaseException) -> bool:
    """Whether ``error`` (alone or inside an ExceptionGroup) is watchfiles' refusal of a path
    that is not valid UTF-8."""
    if isinstance(error, BaseExceptionGroup):
        return all(_undecodable_path(e) for e in error.exceptions)
    return isinstance(error, RuntimeError) and "decode path" in str(error)


def _delivered_version(checkpoint: str | None) -> tuple[int, int] | None:
    """``(mtime_ns, size)`` of a ``"<mtime_ns>:<size>:<etag>"`` checkpoint value."""
    if checkpoint is None:
        return None
    mtime, _, rest = checkpoint.partition(":")
    size = rest.partition(":")[0]
    if not (mtime.isdigit() and size.isdigit()):
        return None
    return int(mtime), int(size)


class DirectorySource(Source):
    """Turns files dropped into a folder into S3 ``ObjectCreated:Put`` events."""

    Settings = DirectorySettings
    traits = SourceTraits(
        kind=SourceKind.ASYNC,
        batch_size_default=1,
        batch_size_max=1,
        retry_default=2,
        retry_min=0,
        retry_max=2,
        record_age_default=21600,
        record_age_min=60,
        record_age_max=21600,
        supports=frozenset(
            {
                "maximum_retry_attempts",
                "maximum_record_age",
                "destination_config",
                "filter_criteria",
            }
        ),
    )

    settings: DirectorySettings

    def __init__(self, settings: DirectorySettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self.root = Path(settings.path).absolute()
        self.bucket = settings.bucket or self.root.name
        mapping = context.mapping
        self._key = mapping.uuid or mapping.name
        self._lease = f"directory:{self._key}"
        self._seen: dict[str, tuple[int, int]] = {}
        """Key -> (mtime_ns, size) delivered, acked or in flight: never announced twice."""
        self._settling: dict[str, asyncio.Task[None]] = {}
        self._unreadable: dict[str, tuple[int, int]] = {}
        """Key -> (mtime_ns, size) that could not be read: rejected once per version."""
        self._tasks: asyncio.TaskGroup | None = None
        self._pending: set[str] = set()
        """Keys handed to the pipeline and not acknowledged yet."""
        self._checkpoints = CheckpointWriter(context.store.put_checkpoints, self._key)
        """Acknowledgements made while a checkpoint write is in flight go in the next one
        (one transaction for many files: a trickle of files is not a commit each)."""

    # ------------------------------------------------------------------ contract

    async def run(self, sink: Sink) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await self._wait_for_lease(sink)
        stop = asyncio.Event()
        self._settling.clear()
        self._pending.clear()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._keep_lease(sink))
                tasks.create_task(self._watch(sink, stop))
                # The watch task registers its inotify watches on its first step, which runs
                # before this one resumes: nothing created from here on goes unseen.
                await asyncio.sleep(0)
                try:
                    await self._scan(sink)
                    sink.supervisor.working()
                    await asyncio.Event().wait()
                finally:
                    stop.set()  # ends the watcher thread now rather than at its timeout
        finally:
            self._tasks = None

    def build_event(self, records: Sequence[Record]) -> dict[str, Any]:
        return {"Records": [r.data for r in records]}

    async def ack(self, records: Sequence[Record]) -> None:
        values = {
            checkpoint_key(r.position.key): r.position.checkpoint
            for r in records
            if isinstance(r.position, FileVersion)
        }
        try:
            await self._checkpoints.put(values)
        except StoreError as e:
            names = ", ".join(f"{self.bucket}/{printable(r.position.key)}" for r in records)
            raise SourceError(describe(e, f"writing the checkpoint of {names}")) from e
        self._pending.difference_update(
            r.position.key for r in records if isinstance(r.position, FileVersion)
        )

    def metrics(self) -> list[MetricFamily]:
        """``router_directory_files_waiting``: files found and not delivered yet (settling,
        waiting for room in the pipeline, or being delivered): the folder's lag."""
        waiting = len(self._pending.union(self._settling))
        name = self.context.mapping.name
        return [
            MetricFamily(
                name="router_directory_files_waiting",
                type="gauge",
                help="Files of the folder found and not delivered yet (settling, waiting for "
                "room, or being delivered)",
                samples=[("router_directory_files_waiting", {"mapping": name}, float(waiting))],
            )
        ]

    async def aclose(self) -> None:
        await self._checkpoints.aclose()
        with contextlib.suppress(Exception):
            await self.context.store.release_lease(self._lease, self.context.replica_id)

    # ------------------------------------------------------------------ discovery

    def key_of(self, path: Path) -> str | None:
        """The object key of ``path``, or None when the mapping ignores that file."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return None
        parts = relative.parts
        if not parts or (not self.settings.recursive and len(parts) > 1):
            return None
        if self.settings.ignore_hidden and (
            any(p.startswith(".") for p in parts) or parts[-1].endswith(PARTIAL_SUFFIXES)
        ):
            return None
        key = relative.as_posix()
        if not key.startswith(self.settings.prefix) or not key.endswith(self.settings.suffix):
            return None
        return key

    def _list_files(self, top: Path) -> list[tuple[str, Path, int, int]]:
        found = []
        walker = os.walk(top) if self.settings.recursive else [(str(top), [], os.listdir(top))]
        for folder, _, names in walker:
            for name in names:
                path = Path(folder, name)
                key = self.key_of(path)
                st = _stat(path) if key is not None else None
                if key is not None and st is not None:
                    found.append((key, path, *st))
        return found

    async def _scan(self, sink: Sink) -> None:
        store = self.context.store
        done = await sink.supervisor.retry(
            f"reading the checkpoints of {self.root}",
            lambda: store.get_checkpoints(self._key),
        )
        files = await asyncio.to_thread(self._list_files, self.root)
        present = {checkpoint_key(key) for key, *_ in files}
        gone = [k for k in done if k not in present]
        if gone:
            self._forget(sink, gone)
        for key, _, mtime_ns, size in files:
            if _delivered_version(done.get(checkpoint_key(key))) == (mtime_ns, size):
                self._seen[key] = (mtime_ns, size)
        new = sorted((f for f in files if self._seen.get(f[0]) != (f[2], f[3])), key=lambda f: f[2])
        logger.info(
            "directory %s: %d file(s), %d new or changed since last run",
            self.root,
            len(files),
            len(new),
        )
        for key, path, *_ in new:  # oldest first
            self._settle(sink, key, path)

    async def _watch(self, sink: Sink, stop: asyncio.Event) -> None:
        rescan = False
        while not stop.is_set():
            if rescan:
                # Runs once the new watcher has registered its watches (its first step,
                # before this task yields): what came in between is found by the scan.
                assert self._tasks is not None
                self._tasks.create_task(self._rescan(sink))
            try:
                await self._follow(sink, stop)
                return
            except Exception as e:
                # watchfiles gives up on a whole batch of changes when one path in it is not
                # valid UTF-8. Watch again and look at the folder, so the batch is not lost.
                if not _undecodable_path(e):
                    raise
                logger.warning(
                    "directory %s: the watcher met a file name that is not valid UTF-8; "
                    "watching again and rescanning the folder",
                    self.root,
                )
                rescan = True

    async def _follow(self, sink: Sink, stop: asyncio.Event) -> None:
        from watchfiles import Change

        async for changes in watch(
            self.root,
            what=f"directory source {self.context.mapping.name}",
            watch_filter=None,
            stop_event=stop,
            recursive=self.settings.recursive,
            debounce=WATCH_DEBOUNCE_MS,
            step=WATCH_STEP_MS,
        ):
            gone: list[str] = []
            for change, raw in sorted(changes, key=lambda c: c[1]):
                path = Path(raw)
                if change is Change.deleted:
                    key = self.key_of(path)
                    if key is not None and self._seen.pop(key, None) is not None:
                        gone.append(checkpoint_key(key))
                elif change is Change.added and _is_dir(path):
                    # Files written into a new folder before its watch was added.
                    found = await asyncio.to_thread(self._list_files, path)
                    for key, file_path, *_ in found:
                        self._settle(sink, key, file_path)
                elif (key := self.key_of(path)) is not None:
                    self._settle(sink, key, path)
            if gone:
                self._forget(sink, gone)

    async def _rescan(self, sink: Sink) -> None:
        files = await asyncio.to_thread(self._list_files, self.root)
        for key, path, mtime_ns, size in sorted(files, key=lambda f: f[2]):
            if self._seen.get(key) != (mtime_ns, size) and key not in self._settling:
                self._settle(sink, key, path)

    def _forget(self, sink: Sink, keys: list[str]) -> None:
        """Delete the checkpoints of files that are gone, in the background: a store that is
        down must not hold up the watcher."""
        store = self.context.store
        what = f"forgetting {len(keys)} deleted file(s) of {self.root}"
        assert self._tasks is not None
        self._tasks.create_task(
            sink.supervisor.retry(what, lambda: store.delete_checkpoints(self._key, keys))
        )

    # ------------------------------------------------------------------ announcing

    def _settle(self, sink: Sink, key: str, path: Path) -> None:
        """(Re)start the settle timer of ``key``."""
        assert self._tasks is not None
        previous = self._settling.pop(key, None)
        if previous is not None:
            previous.cancel()
        task = self._tasks.create_task(self._announce(sink, key, path))
        self._settling[key] = task
        task.add_done_callback(
            lambda t: self._settling.pop(key) if self._settling.get(key) is t else None
        )

    async def _announce(self, sink: Sink, key: str, path: Path) -> None:
        settle = self.settings.settle
        before = _stat(path)
        while True:
            if before is None:
                return  # deleted before it settled: no event
            if self._seen.get(key) == before:
                return  # this content was already announced
            age = time.time() - before[0] / 1e9
            if age < settle:
                await asyncio.sleep(settle - max(age, 0.0))
                now = _stat(path)
                if now != before:
                    before = now
                    continue
            problem = key_problem(key)
            if problem is not None:
                await self._reject(sink, key, path, before, problem, remember=True)
                return
            try:
                if before[1] <= INLINE_HASH_BYTES:
                    etag = _md5(path)
                else:
                    etag = await asyncio.to_thread(_md5, path)
            except FileNotFoundError:
                return  # deleted while hashing
            except OSError as e:
                if self._unreadable.get(key) != before:
                    self._unreadable[key] = before
                    reason = f"cannot read the file: {e.strerror or e}"
                    await self._reject(sink, key, path, before, reason, remember=False)
                return
            after = _stat(path)
            if after != before:
                before = after  # written to while hashing
                continue
            break
        mtime_ns, size = before
        self._seen[key] = before
        self._unreadable.pop(key, None)
        version = FileVersion(key, mtime_ns, size, etag)
        self._pending.add(key)
        try:
            await sink.put([self.record(version)])
        except BaseException:
            self._pending.discard(key)
            # Not handed over (cancelled while waiting for room, or run() is failing): the
            # next run's scan must announce this version again.
            if self._seen.get(key) == before:
                del self._seen[key]
            raise

    async def _reject(
        self,
        sink: Sink,
        key: str,
        path: Path,
        version: tuple[int, int],
        reason: str,
        *,
        remember: bool,
    ) -> None:
        """Report a file that cannot become an event, and skip it. ``remember``: write its
        checkpoint, so that it is not reported again until it changes or is renamed."""
        mtime_ns, size = version
        item = {
            "bucket": self.bucket,
            "key": printable(key),
            "path": printable(str(path)),
            "size": size,
            "lastModified": format_time(datetime.fromtimestamp(mtime_ns / 1e9, UTC)),
        }
        await sink.reject(item, reason)
        if not remember:
            return
        self._seen[key] = version
        store, stored = self.context.store, checkpoint_key(key)
        value = f"{mtime_ns}:{size}:{REJECTED_ETAG}"
        await sink.supervisor.retry(
            f"writing the checkpoint of {printable(key)}",
            lambda: store.put_checkpoints(self._key, {stored: value}),
        )

    def record(self, version: FileVersion) -> Record:
        owner = {"principalId": PRINCIPAL_ID}
        event_time = datetime.fromtimestamp(version.mtime_ns / 1e9, UTC)
        data = normalise(
            {
                "eventTime": format_time(event_time),
                "eventName": "ObjectCreated:Put",
                "awsRegion": self.settings.region,
                "userIdentity": owner,
                "s3": {
                    "configurationId": self.context.mapping.name,
                    "bucket": {"name": self.bucket, "ownerIdentity": owner},
                    "object": {
                        "key": encode_key(version.key),
                        "size": version.size,
                        "eTag": version.etag,
                        "sequencer": f"{version.mtime_ns:016X}",
                    },
                },
            },
            seed=f"{self.bucket}/{version.key}:{version.checkpoint}",
        )
        request_id = data["responseElements"]["x-amz-request-id"]
        return Record(
            lane=version.key,
            position=version,
            data=data,
            identifier=request_id,
            size=len(orjson.dumps(data)),
            arrival=time.time(),
        )

    # ------------------------------------------------------------------ lease

    async def _wait_for_lease(self, sink: Sink) -> None:
        store, me, ttl = self.context.store, self.context.replica_id, self.settings.lease_ttl
        what = f"acquiring the lease {self._lease}"
        waited = False
        while not await sink.supervisor.retry(
            what, lambda: store.acquire_lease(self._lease, me, ttl)
        ):
            if not waited:
                logger.info(
                    "directory %s: another replica holds %s; waiting for it", self.root, self._lease
                )
                waited = True
            await asyncio.sleep(ttl / 3)
        if waited:
            logger.info("directory %s: took over the lease %s", self.root, self._lease)

    async def _keep_lease(self, sink: Sink) -> None:
        store, me, ttl = self.context.store, self.context.replica_id, self.settings.lease_ttl
        what = f"renewing the lease {self._lease}"
        while True:
            await asyncio.sleep(ttl / 3)
            if not await sink.supervisor.retry(
                what, lambda: store.acquire_lease(self._lease, me, ttl)
            ):
                raise LeaseLost(
                    f"directory {self.root}: lease {self._lease} was taken over by another "
                    "replica (this one could not renew it in time); waiting for it again"
                )
