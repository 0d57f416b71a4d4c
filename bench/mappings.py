"""Many mappings in one router: start-up, RSS per mapping, one SQL change, apply --dry-run.

Run by hand: ``python bench/mappings.py [--mappings 1000] [--kafka 100] [--store sqlite]``.
One router on a fresh store (SQLite, or ``postgres``: a fresh database on 127.0.0.1:5432)
runs N mappings: ``--kafka`` Kafka mappings, one topic each on a tansu broker started on a
free port (``--kafka 0``: none), ``--directories`` ``directory`` mappings (a folder each),
the rest ``schedule`` (``rate(1 hour)``), all to one python function.

* start-up: the first half of the mappings applied to the store and ``Router.start``; then
  the whole configuration applied while the router runs, and the time until it runs them all;
  at the end, a new router started with all of them in the store (a restart);
* RSS: before the router, with half, and with all the mappings, and the growth per mapping
  of each half (linear growth: the two halves cost the same);
* one SQL change (``UPDATE event_source_mappings SET enabled = false`` of one mapping): the
  time until the running router has stopped that mapping;
* ``router apply --dry-run`` with the whole configuration on the store that holds it (nothing
  to change: the plan is computed and printed), as a command, next to the same with one
  mapping (the command's fixed cost: Python, imports, the store).

Targets: start <= 30 s, one change applied <= 5 s, RSS growing linearly (printed per mapping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import types
import uuid
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


def config(
    count: int, kafka: int, directories: int, folder: Path, bootstrap: str, topics: list[str]
) -> str:
    lines = [
        "functions:",
        '  f: {invoker: python, handler: "mappings_bench:handle"}',
        "mappings:",
    ]
    for i in range(count):
        if i < kafka:
            group = f"g-{i}-{uuid.uuid4().hex[:6]}"
            source = (
                f'type: kafka, bootstrap_servers: ["{bootstrap}"], topics: [{topics[i]}], '
                f"consumer_group_id: {group}, session_timeout_ms: 1000, heartbeat_interval_ms: 100"
            )
            name = f"k{i:04d}"
        elif i < kafka + directories:
            source = f'type: directory, path: "{folder / f"d{i:04d}"}"'
            name = f"d{i:04d}"
        else:
            source = "type: schedule, schedule: rate(1 hour)"
            name = f"s{i:04d}"
        lines.append(f"  - {{name: {name}, function: f, source: {{{source}}}}}")
    return "\n".join(lines) + "\n"


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
        await asyncio.sleep(0.1)


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
    args = parser.parse_args()
    tune_gc()
    module = types.ModuleType("mappings_bench")
    module.handle = handle  # type: ignore[attr-defined]
    sys.modules["mappings_bench"] = module
    n, half = args.mappings, args.mappings // 2
    with contextlib.ExitStack() as stack:
        bootstrap = stack.enter_context(tansu()) if args.kafka else "127.0.0.1:9"
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        topics = await make_topics(bootstrap, min(args.kafka, n))
        full_text = config(n, args.kafka, args.directories, folder, bootstrap, topics)
        # The first half: the same mappings, so the second apply only adds.
        half_text = full_text.split("\n")[: 3 + half]
        full_path, half_path = folder / "all.yaml", folder / "half.yaml"
        full_path.write_text(full_text)
        (folder / "half").mkdir()
        half_path = folder / "half" / "router.yaml"
        half_path.write_text("\n".join(half_text) + "\n")
        one_path = folder / "one" / "router.yaml"
        one_path.parent.mkdir()
        one_path.write_text("\n".join(full_text.split("\n")[:4]) + "\n")
        print(f"{n:,} mappings ({args.kafka} Kafka) on {args.store} ({load()})")
        async with store_at(args.store) as url:
            store = SQLStore(url)
            await store.start()
            try:
                rss0 = rss_mb()
                began = time.perf_counter()
                half_config = load_config_text(half_path.read_text(), "half.yaml")
                await apply_config(half_config, store)
                applied = time.perf_counter()
                router = Router(half_config, store, shutdown_timeout=30)
                await router.start()
                await wait_running(router, half)
                started = time.perf_counter()
                rss1 = rss_mb()
                print(
                    f"  {half:,} mappings: apply {applied - began:.1f} s, start "
                    f"{started - applied:.1f} s; RSS {rss0:.0f} -> {rss1:.0f} MB, "
                    f"{(rss1 - rss0) * 1024 / half:.0f} KB per mapping ({load()})"
                )
                try:
                    t0 = time.perf_counter()
                    full_config = load_config_text(full_text, "all.yaml")
                    await apply_config(full_config, store)
                    t1 = time.perf_counter()
                    await wait_running(router, n)
                    t2 = time.perf_counter()
                    rss2 = rss_mb()
                    print(
                        f"  {n:,} mappings: apply of {n - half:,} more {t1 - t0:.1f} s, all "
                        f"running {t2 - t1:.1f} s later; RSS {rss2:.0f} MB, "
                        f"{(rss2 - rss1) * 1024 / (n - half):.0f} KB per mapping ({load()})"
                    )
                    target = next(u for u, name in router.enabled.items() if name.startswith("s"))
                    t0 = time.perf_counter()
                    async with store.engine.begin() as conn:
                        await conn.execute(
                            sa.text(
                                "UPDATE event_source_mappings SET enabled = false WHERE uuid = :u"
                            ),
                            {"u": target},
                        )
                    while True:
                        if target not in router.running:
                            break
                        if time.perf_counter() - t0 > 60:
                            raise SystemExit("the SQL change was not applied within 60 s")
                        await asyncio.sleep(0.02)
                    print(
                        f"  one SQL change applied by the running router in "
                        f"{time.perf_counter() - t0:.2f} s (target <= 5 s)"
                    )
                finally:
                    await router.stop()
                # A router starting with every mapping already in the store (a restart; the
                # one disabled above stays disabled).
                t0 = time.perf_counter()
                router = Router(full_config, store, shutdown_timeout=30)
                await router.start()
                await wait_running(router, n - 1)
                t1 = time.perf_counter()
                await router.stop()
                print(
                    f"  a router starting with all {n:,}: {t1 - t0:.1f} s (target <= 30 s) "
                    f"({load()})"
                )
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
