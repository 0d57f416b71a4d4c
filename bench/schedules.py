"""Many schedules in one router: fire delay, RSS, CPU and store writes per fire, start-up.

Run by hand: ``python bench/schedules.py [--schedules 10000] [--minutes 3]
[--store sqlite,postgres]``. For each store (a fresh SQLite file; a fresh database on
PostgreSQL 127.0.0.1:5432), one router runs N ``schedule`` mappings, a third of each kind,
time zones mixed (UTC, Europe/Berlin, America/New_York, Asia/Kolkata, Asia/Kathmandu,
Australia/Adelaide):

* ``rate(5 minutes)`` with a ``start_date`` that puts it on one minute in five;
* ``cron(k/5 * * * ? *)``, k = 0..4, in its local time zone (every offset used is a multiple
  of 15 minutes, so it fires on one UTC minute in five);
* ``at(...)`` once, on one of the measured minutes, in its local time zone.

About N / 4 fires are due at second 0 of every minute. The handler (``async def``, on the
event loop) takes the time first thing; a fire's delay is that time minus its scheduled time.
Measured: start-up (apply of the configuration, ``Router.start``, and until every schedule
has done its catch-up), then every fire due in the whole minutes after start-up, for
``--minutes`` minutes: delay p50 / p99 / max, fires missing and duplicated, RSS, CPU-seconds
per fire, store writes per fire (by method) and store rows added per fire. The baseline,
in the same run before the router: one bare asyncio task per schedule sleeping until its due
time on one minute, the delay of its wake-up.
Targets: p99 fire delay <= 1 s, RSS <= 300 MB, no duplicate (or missing) fire, start-up <= 10 s.
With several stores, each runs in a process of its own (RSS is a high-water mark).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa

from bench.support import count_writes, load, percentile, rss_mb, store_at
from connectors.schedule.source import CLAIM_AHEAD
from router.app import Router, tune_gc
from router.config import apply_config, load_config_text
from router.store import SQLStore

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Adelaide",
]
TABLES = ("schedule_fires", "checkpoints", "leases", "mapping_stats")

FIRES: collections.Counter[tuple[str, str]] = collections.Counter()
DELAYS: dict[tuple[str, str], float] = {}


async def handle(event: dict[str, object], context: object) -> None:
    now = time.time()
    resource = event["resources"]
    assert isinstance(resource, list)
    name = str(resource[0]).rsplit("/", 1)[1]
    when = str(event["time"])
    FIRES[name, when] += 1
    scheduled = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    DELAYS.setdefault((name, when), now - scheduled.timestamp())


def minute_slot(i: int) -> int:
    return (i // 3) % 5


def plan(count: int, first: datetime, minutes: int) -> tuple[str, dict[str, set[datetime]]]:
    """The configuration of ``count`` schedules, and for each the UTC times it fires at
    within ``[first, first + minutes)`` (whole minutes)."""
    window = [first + timedelta(minutes=m) for m in range(minutes)]
    lines = ["functions:", '  f: {invoker: python, handler: "schedule_bench:handle"}', "mappings:"]
    expected: dict[str, set[datetime]] = {}
    for i in range(count):
        name = f"s{i:05d}"
        zone = ZONES[i % len(ZONES)]
        k = minute_slot(i)
        if i % 3 == 0:
            start = datetime(2024, 1, 1, 0, k, tzinfo=ZoneInfo(zone)).astimezone(UTC)
            source = f"schedule: rate(5 minutes), start_date: '{start:%Y-%m-%dT%H:%M:%S}Z'"
            fires = {t for t in window if t.minute % 5 == (start.minute % 5)}
        elif i % 3 == 1:
            source = f"schedule: 'cron({k}/5 * * * ? *)', timezone: {zone}"
            offset = datetime(2024, 1, 1, tzinfo=ZoneInfo(zone)).utcoffset() or timedelta()
            fires = {t for t in window if (t + offset).astimezone(ZoneInfo(zone)).minute % 5 == k}
        else:
            at = window[(i // 3) % minutes]
            local = at.astimezone(ZoneInfo(zone))
            source = f"schedule: 'at({local:%Y-%m-%dT%H:%M:%S})', timezone: {zone}"
            fires = {at}
        lines.append(f"  - {{name: {name}, function: f, source: {{type: schedule, {source}}}}}")
        expected[name] = fires
    return "\n".join(lines) + "\n", expected


async def bare(expected: dict[str, set[datetime]]) -> list[float]:
    """One asyncio task per schedule sleeping until its first due time: wake-up delays."""
    delays: list[float] = []

    async def one(due: datetime) -> None:
        await asyncio.sleep(max(0.0, due.timestamp() - time.time()))
        delays.append(time.time() - due.timestamp())

    firsts = [min(times) for times in expected.values() if times]
    first = min(firsts)
    await asyncio.gather(*(one(t) for t in firsts if t == first))
    return delays


async def rows(store: SQLStore) -> int:
    async with store.engine.connect() as conn:
        total = 0
        for table in TABLES:
            total += (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
        return total


async def started_schedules(store: SQLStore) -> int:
    """Schedules that wrote a checkpoint (``since`` at a first start): catch-up done."""
    query = "SELECT count(DISTINCT mapping_uuid) FROM checkpoints"
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.text(query))).scalar_one())


def ms(values: list[float]) -> str:
    v = [x * 1000 for x in values]
    p50, p99, top = percentile(v, 0.5), percentile(v, 0.99), max(v, default=0)
    return f"p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  max {top:8.1f} ms"


async def one_store(backend: str, count: int, minutes: int, startup_allowance: float) -> None:
    FIRES.clear()
    DELAYS.clear()
    now = datetime.now(UTC)
    first = (now + timedelta(seconds=startup_allowance + 60)).replace(second=0, microsecond=0)
    text, expected = plan(count, first, minutes)
    print(f"{backend}: {count:,} schedules; measured minutes from {first:%H:%M} UTC ({load()})")
    rss_before = rss_mb()
    async with store_at(backend) as url:
        store = SQLStore(url)
        await store.start()
        try:
            began = time.perf_counter()
            config = load_config_text(text, "schedules.yaml")
            await apply_config(config, store)
            applied = time.perf_counter()
            writes = count_writes(store)
            router = Router(config, store, shutdown_timeout=30)
            del config, text  # as `router run` does: the mappings are in the store
            await router.start()
            started = time.perf_counter()
            while await started_schedules(store) < count:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0.1)
            ready = time.perf_counter()
            startup = ready - began
            print(
                f"  start-up {ready - began:6.1f} s: load+apply {applied - began:.1f} s, "
                f"Router.start {started - applied:.1f} s, every catch-up done "
                f"{ready - started:.1f} s later (target <= 10 s); RSS {rss_mb():.0f} MB "
                f"(+{rss_mb() - rss_before:.0f} MB)"
            )
            if datetime.now(UTC) >= first:
                print("  start-up overran the allowance: raise --startup-allowance")
            try:
                # Counted from before the first measured fires are claimed (CLAIM_AHEAD
                # before their due time).
                claims_at = first - CLAIM_AHEAD - timedelta(seconds=2)
                await asyncio.sleep(max(0.0, claims_at.timestamp() - time.time()))
                writes.clear()
                stored = await rows(store)
                cpu = time.process_time()
                baseline = asyncio.create_task(bare(expected))
                end = first + timedelta(minutes=minutes)
                await asyncio.sleep(max(0.0, end.timestamp() - time.time()) + 5)
                cpu_used = time.process_time() - cpu
                base = await baseline
                print(f"  bare asyncio timers ({len(base):,} due at {first:%H:%M}): {ms(base)}")
                grown = await rows(store) - stored
                rss = rss_mb()
                counted = collections.Counter(writes)
            finally:
                await router.stop()
        finally:
            await store.aclose()
    due = {(n, f"{t:%Y-%m-%dT%H:%M:%SZ}") for n, ts in expected.items() for t in ts}
    fired = [DELAYS[k] for k in due if k in DELAYS]
    missing = len(due) - len(fired)
    end_iso = f"{first + timedelta(minutes=minutes):%Y-%m-%dT%H:%M:%SZ}"
    first_iso = f"{first:%Y-%m-%dT%H:%M:%SZ}"
    extra = sum(1 for k in FIRES if k not in due and first_iso <= k[1] < end_iso)
    dups = sum(c - 1 for c in FIRES.values() if c > 1)
    n = max(len(fired), 1)
    total_writes = sum(counted.values())
    print(
        f"  router: {len(fired):,} fires of {len(due):,} due ({missing} missing, "
        f"{dups} duplicated, {extra} not due): {ms(fired)}"
    )
    met = percentile(fired, 0.99) <= 1 and not dups and not missing and rss <= 300
    verdict = "meets" if met and startup <= 10 else "misses"
    print(
        f"  RSS {rss:.0f} MB; CPU {cpu_used / n * 1000:.2f} ms per fire; store "
        f"{total_writes / n:.2f} writes per fire ({dict(counted.most_common())}), "
        f"{grown / n:.2f} rows added per fire; targets: {verdict} ({load()})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=3, help="whole minutes measured")
    parser.add_argument("--store", default="sqlite,postgres", help="stores, comma-separated")
    parser.add_argument(
        "--startup-allowance",
        type=float,
        default=60,
        help="seconds allowed for start-up before the first measured minute",
    )
    args = parser.parse_args()
    tune_gc()
    module = types.ModuleType("schedule_bench")
    module.handle = handle  # type: ignore[attr-defined]
    sys.modules["schedule_bench"] = module
    backends = args.store.split(",")
    if len(backends) == 1:
        await one_store(backends[0], args.schedules, args.minutes, args.startup_allowance)
        return
    # One process per store: the second one's RSS is not the first one's high-water mark.
    for backend in backends:
        argv = [sys.executable, __file__, *sys.argv[1:], "--store", backend]
        await asyncio.to_thread(subprocess.run, argv, check=True)


if __name__ == "__main__":
    asyncio.run(main())
