"""Many mappings in one router: start-up, RSS per mapping, SQL changes, apply --dry-run.

Run by hand: ``python bench/mappings.py [--mappings 1000] [--kafka 100] [--store sqlite]``.
One router on a fresh store (SQLite, or ``postgres``: a fresh database on 127.0.0.1:5432)
runs N mappings: ``--kafka`` Kafka mappings, one topic each on a tansu broker started on a
free port (``--kafka 0``: none), ``--directories`` ``directory`` mappings (a folder each),
the rest ``schedule`` (``rate(1 hour)``), all to one python function. The three kinds are
spread evenly over the list, so every step below adds the same mix.

* steps (``--steps 4``: 250, 500, 750, 1,000 of 1,000): the first step is applied to the
  store and the router started (start-up); each further step applies the larger
  configuration to the running router (only adds), and the time until it runs them all is
  printed;
* RSS at each step, after the sources settled (``--settle``), ``gc.collect()`` and glibc's
  ``malloc_trim`` (free heap pages handed back, so the figure is what is held, not what the
  allocator kept from a burst): the growth per mapping of each step, and a least-squares line
  through the steps (its slope is the cost of a mapping; the residuals say how straight the
  growth is). ``--tracemalloc``: the Python heap at each step and the allocation sites that
  grow with the mappings, per mapping (RSS is then inflated by tracemalloc's own bookkeeping);
* SQL changes (``--changes 3``: ``UPDATE event_source_mappings SET enabled = ...`` of one
  schedule mapping, disabling then enabling again): the time until the running router has
  stopped / started it;
* a new router started with all of them in the store (a restart);
* ``router apply --dry-run`` with the whole configuration on the store that holds it (nothing
  to change: the plan is computed and printed), as a command, next to the same with one
  mapping (the command's fixed cost: Python, imports, the store).

Targets: start <= 30 s, one change applied <= 5 s, RSS growing linearly (printed per mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
import uuid
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.kafka import tansu
from bench.support import load, rss_mb, store_at
from router.app import Router, tune_gc
from router.config import apply_config, load_config_text
from router.store import SQLStore

ROOT = Path(__file__).resolve().parents[1]


async def handle(event: dict[str, object], context: object) -> None:
    return None


def kinds(count: int, kafka: int, directories: int) -> list[str]:
    """The kind of each mapping (``k``, ``d`` or ``s``): Kafka ones spread evenly over the
    list, directory ones evenly over the rest, so that any prefix holds the same mix."""

    def every(i: int, among: int, of: int) -> bool:
        return (i + 1) * of // among != i * of // among

    kafka, out, others = min(kafka, count), [], 0
    for i in range(count):
        if every(i, count, kafka):
            out.append("k")
            continue
        out.append("d" if every(others, count - kafka, min(directories, count - kafka)) else "s")
        others += 1
    return out


def mapping_lines(
    kinds_: Sequence[str], folder: Path, bootstrap: str, topics: Sequence[str]
) -> list[str]:
    lines = []
    next_topic = iter(topics)
    for i, kind in enumerate(kinds_):
        if kind == "k":
            group = f"g-{i}-{uuid.uuid4().hex[:6]}"
            source = (
                f'type: kafka, bootstrap_servers: ["{bootstrap}"], topics: [{next(next_topic)}], '
                f"consumer_group_id: {group}, session_timeout_ms: 1000, heartbeat_interval_ms: 100"
            )
        elif kind == "d":
            source = f'type: directory, path: "{folder / f"d{i:04d}"}"'
        else:
            source = "type: schedule, schedule: rate(1 hour)"
        lines.append(f"  - {{name: {kind}{i:04d}, function: f, source: {{{source}}}}}")
    return lines


def config_text(lines: Sequence[str]) -> str:
    head = ["functions:", '  f: {invoker: python, handler: "mappings_bench:handle"}', "mappings:"]
    return "\n".join([*head, *lines]) + "\n"


def dry_run(path: Path, url: str) -> float:
    argv = [sys.executable, "-m", "router.cli", "apply", "--dry-run", "--config", str(path)]
    argv += ["--store", url]
    began = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


async def make_topics(bootstrap: str, count: int) -> list[str]:
    topics = [f"m-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    if count:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
        finally:
            await admin.close()
    return topics


async def wait_running(router: Router, count: int, limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    while len(router.running) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(router.running)} of {count} mappings run")
        await asyncio.sleep(0.05)


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def settled_rss(settle: float) -> float:
    """RSS (MB) once the sources had ``settle`` seconds, garbage was collected and the
    allocator handed back its free pages."""
    await asyncio.sleep(settle)
    gc.collect()
    _malloc_trim()
    return rss_mb()


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, list[float]]:
    """Least-squares line through (xs, ys): slope, intercept and the residuals."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    return slope, intercept, [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]


def print_fit(what: str, counts: Sequence[int], mbs: Sequence[float]) -> None:
    if len(counts) < 2:
        return
    slope, intercept, residuals = fit(counts, mbs)
    worst = max(abs(r) for r in residuals)
    print(
        f"  {what}: linear fit over {len(counts)} steps: {slope * 1024:.1f} KB per mapping "
        f"(slope), {intercept:.1f} MB at none (intercept); residuals "
        f"{', '.join(f'{r:+.2f}' for r in residuals)} MB (largest {worst:.2f} MB, "
        f"{worst * 1024 / max(counts):.1f} KB per mapping at {max(counts):,})"
    )


def print_top(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, added: int) -> None:
    """The allocation sites that grew most from ``first`` to ``last``, per mapping added."""
    for key in ("filename", "lineno"):
        stats = last.compare_to(first, key)
        total = sum(s.size_diff for s in stats)
        print(
            f"  tracemalloc, growth per mapping by {key}: {total / added / 1024:.1f} KB in all; "
            "the largest:"
        )
        for stat in stats[: 12 if key == "lineno" else 8]:
            frame = stat.traceback[0]
            where = frame.filename.replace(str(ROOT) + "/", "")
            for marker in ("site-packages/", "lib/python3"):
                if marker in where:
                    where = where.split(marker, 1)[1].lstrip("/0123456789.")
            if key == "lineno":
                where += f":{frame.lineno}"
            print(
                f"    {stat.size_diff / added:8.0f} B  {stat.count_diff / added:6.1f} blocks  "
                f"{where}"
            )


async def sql_changes(
    store: SQLStore, router: Router, count: int, limit: float = 60
) -> list[tuple[str, float]]:
    """Disable, then enable again, schedule mappings with SQL, one at a time; the time each
    took to be applied by the running router."""
    out = []
    targets = [u for u, name in sorted(router.enabled.items()) if name.startswith("s")]
    for i in range(count):
        target = targets[i // 2]
        enabled = i % 2 == 1
        await asyncio.sleep(1.3)  # not in step with the SQLite poll interval, nor with the last
        out.append(
            (
                "enable" if enabled else "disable",
                await set_enabled(store, router, target, enabled, limit),
            )
        )
    return out


async def set_enabled(
    store: SQLStore, router: Router, target: str, enabled: bool, limit: float
) -> float:
    """Enable or disable mapping ``target`` with SQL; seconds until ``router`` applied it."""
    t0 = time.perf_counter()
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE event_source_mappings SET enabled = :e WHERE uuid = :u"),
            {"u": target, "e": enabled},
        )
    while (target in router.running) != enabled:
        if time.perf_counter() - t0 > limit:
            raise SystemExit(f"the SQL change was not applied within {limit:.0f} s")
        await asyncio.sleep(0.01)
    return time.perf_counter() - t0


async def grow(
    store: SQLStore,
    lines: Sequence[str],
    sizes: Sequence[int],
    holder: list[Router],
    settle: float,
    trace: bool,
) -> None:
    """Apply the first ``sizes[0]`` mappings and start a router (put into ``holder``), then
    apply each larger prefix of ``lines`` to it; RSS (and the Python heap) at each step."""
    gc.collect()
    _malloc_trim()
    rss0 = rss_mb()
    print(f"  RSS before the router: {rss0:.1f} MB")
    if trace:
        tracemalloc.start()
    mbs: list[float] = []
    traced: list[float] = []
    snapshots: list[tracemalloc.Snapshot] = []
    prev = 0
    for size in sizes:
        config = load_config_text(config_text(lines[:size]), "all.yaml")
        t0 = time.perf_counter()
        await apply_config(config, store)
        t1 = time.perf_counter()
        if not holder:
            holder.append(Router(config, store, shutdown_timeout=30))
            await holder[0].start()
            what = f"apply {t1 - t0:.1f} s, start"
        else:
            what = f"apply of {size - prev:,} more {t1 - t0:.1f} s, all running"
        await wait_running(holder[0], size)
        t2 = time.perf_counter()
        rss = await settled_rss(settle)
        if mbs:
            growth = f"{(rss - mbs[-1]) * 1024 / (size - prev):.1f} KB per mapping of the step"
        else:
            growth = f"{(rss - rss0) * 1024 / size:.1f} KB per mapping with the router's own"
        mbs.append(rss)
        extra = ""
        if trace:
            snapshots.append(tracemalloc.take_snapshot())
            traced.append(tracemalloc.get_traced_memory()[0] / 2**20)
            extra = f"; Python heap {traced[-1]:.1f} MB"
        print(
            f"  {size:,} mappings: {what} {t2 - t1:.1f} s later; RSS {rss:.1f} MB, "
            f"{growth}{extra} ({load()})"
        )
        prev = size
    print_fit("RSS", sizes, mbs)
    if trace:
        print_fit("Python heap (tracemalloc)", sizes, traced)
        if len(sizes) > 1:
            print_top(snapshots[0], snapshots[-1], sizes[-1] - sizes[0])
        snapshots.clear()
        tracemalloc.stop()


async def restart(store: SQLStore, lines: Sequence[str], changes: int) -> None:
    """A router starting with every mapping in the store (a restart); right after its start,
    while its sources begin, one SQL change (the mapping left disabled by an odd number of
    changes enabled again, or one disabled)."""
    n = len(lines)
    running = n - changes % 2
    t0 = time.perf_counter()
    router = Router(load_config_text(config_text(lines), "all.yaml"), store, shutdown_timeout=30)
    await router.start()
    try:
        await wait_running(router, running)
        t1 = time.perf_counter()
        print(f"  a router starting with all {n:,}: {t1 - t0:.1f} s (target <= 30 s) ({load()})")
        async with store.engine.begin() as conn:
            rows = await conn.execute(sa.text("SELECT uuid, enabled FROM event_source_mappings"))
            states: dict[str, bool] = {str(u): bool(on) for u, on in rows.all()}
        target = next((u for u, on in states.items() if not on), None)
        if target is None:
            names = sorted(router.enabled.items(), key=lambda item: (item[1][0] != "s", item[1]))
            target = names[0][0]
        made = time.perf_counter()
        took = await set_enabled(store, router, target, not states[target], 60)
        print(
            f"  one SQL change made {made - t1:.2f} s after that start applied in "
            f"{took:.2f} s ({load()})"
        )
    finally:
        await router.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mappings", type=int, default=1000)
    parser.add_argument("--kafka", type=int, default=100, help="how many are Kafka mappings")
    parser.add_argument(
        "--directories",
        type=int,
        default=100,
        help="how many are directory mappings (each holds an inotify instance: Linux allows "
        "128 a user by default, fs.inotify.max_user_instances)",
    )
    parser.add_argument("--store", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--steps", type=int, default=4, help="RSS measured at this many sizes")
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds the sources get before each RSS"
    )
    parser.add_argument("--changes", type=int, default=3, help="SQL changes timed")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace the Python heap (slower; RSS inflated)"
    )
    args = parser.parse_args()
    tune_gc()
    module = types.ModuleType("mappings_bench")
    module.handle = handle  # type: ignore[attr-defined]
    sys.modules["mappings_bench"] = module
    n = args.mappings
    sizes = sorted({max(1, n * (i + 1) // args.steps) for i in range(args.steps)})
    kinds_ = kinds(n, args.kafka, args.directories)
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(tansu()) if args.kafka else "127.0.0.1:9"
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        topics = await make_topics(bootstrap, kinds_.count("k"))
        lines = mapping_lines(kinds_, folder, bootstrap, topics)
        full_path = folder / "all.yaml"
        full_path.write_text(config_text(lines))
        one_path = folder / "one" / "router.yaml"
        one_path.parent.mkdir()
        one_path.write_text(config_text(lines[:1]))
        print(
            f"{n:,} mappings ({kinds_.count('k')} Kafka, {kinds_.count('d')} directory, "
            f"{kinds_.count('s')} schedule) on {args.store}, steps of "
            f"{', '.join(f'{s:,}' for s in sizes)} ({load()})"
        )
        async with store_at(args.store) as url:
            store = SQLStore(url)
            await store.start()
            try:
                holder: list[Router] = []
                try:
                    await grow(store, lines, sizes, holder, args.settle, args.tracemalloc)
                    for verb, seconds in await sql_changes(store, holder[0], args.changes):
                        print(
                            f"  one SQL change ({verb} a mapping) applied by the running router "
                            f"in {seconds:.2f} s (target <= 5 s) ({load()})"
                        )
                finally:
                    if holder:
                        await holder[0].stop()
                await restart(store, lines, args.changes)
            finally:
                await store.aclose()
            one = dry_run(one_path, url)
            full = dry_run(full_path, url)
            print(
                f"  router apply --dry-run: {full:.1f} s for {n:,} mappings, "
                f"{one:.1f} s for one ({load()})"
            )


if __name__ == "__main__":
    asyncio.run(main())
