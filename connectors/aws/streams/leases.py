"""How replicas on one store share a stream's shards: pure code, tested table-driven.

Each shard is read under a lease in the store (``Store.acquire_lease``: taken, renewed, and
expired by the database's clock). Each replica also writes a member row into the mapping's
checkpoint rows (``replica:<id>`` = ``<epoch seconds> <shards held>``) every time it renews,
so every replica sees who is alive and how much each holds (``mapping_overview`` sums them
as ``stream_shards_held``):

* a replica takes free shards (no lease, or an expired one) while it holds fewer than its
  fair share, ``ceil(shards / live replicas)``;
* when no shard is free and the busiest live replica holds two or more shards more than
  the least busy one (one that just started, or one that lost a race for a free shard), the
  busiest gives one shard up (it waits for the shard's in-flight batches, writes its
  checkpoint and releases the lease), and a replica below the ceiling takes it. Balancing
  ends when no two replicas differ by more than one shard: 3, 3, 2 for 8 shards on 3
  replicas. (Yielding only to a replica below the floor of the fair share could stop at 4,
  2, 2: nobody below the floor, one replica above the ceiling for good.)
* a replica that dies stops renewing: its leases expire after the lease duration and its
  member row ages out, and the others take its shards within the lease duration (plus one
  renewal interval).
  Its member row is deleted by the others once it is older than twice the lease duration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

MEMBER_PREFIX = "replica:"


def member_row(now: float, held: int) -> str:
    return f"{now:.3f} {held}"


def live_members(rows: Mapping[str, str], now: float, lease: float) -> dict[str, int]:
    """Replica id -> shards held, for the member rows written within ``lease`` seconds."""
    out: dict[str, int] = {}
    for key, value in rows.items():
        if not key.startswith(MEMBER_PREFIX):
            continue
        parts = value.split(" ")
        try:
            if now - float(parts[0]) <= lease:
                out[key[len(MEMBER_PREFIX) :]] = int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            continue
    return out


def dead_members(rows: Mapping[str, str], now: float, lease: float) -> list[str]:
    """Keys of member rows older than twice ``lease`` (their replica is gone) or unreadable."""
    out: list[str] = []
    for key, value in rows.items():
        if not key.startswith(MEMBER_PREFIX):
            continue
        try:
            if now - float(value.split(" ")[0]) > 2 * lease:
                out.append(key)
        except ValueError:
            out.append(key)
    return out


def fair_share(shards: int, members: int) -> tuple[int, int]:
    """``(floor, ceil)`` of ``shards / members``."""
    members = max(1, members)
    return shards // members, math.ceil(shards / members)


def to_take(held: int, shards: int, members: int) -> int:
    """How many free shards a replica holding ``held`` should try to take."""
    _, most = fair_share(shards, members)
    return max(0, most - held)


def should_yield(me: str, held: Mapping[str, int], shards: int, free: int) -> bool:
    """Whether replica ``me`` gives a shard up: no shard is free, ``me`` is the busiest live
    replica (most shards; the highest id among equals, so that exactly one yields) and holds
    at least two more than the least busy one."""
    if free > 0 or len(held) < 2 or me not in held:
        return False
    busiest = max(held.items(), key=lambda item: (item[1], item[0]))[0]
    return busiest == me and held[me] - min(held.values()) >= 2
