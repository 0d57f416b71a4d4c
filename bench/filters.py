"""Filter engine throughput: compiled matcher vs the reference evaluator.

Run by hand: ``python bench/filters.py``.  Events are a fixed, deterministic set of ~1 KB
pre-decoded JSON records (orders, IoT readings, audit logs) with nested objects, arrays and
numbers.  Pattern sets of 5, 50, 500 and 1000 typical filters (exact values, prefixes,
numeric ranges, anything-but, exists, arrays) are compiled once and matched against every
event; the reference evaluator is measured in the same run on the same data.  Rates are
events per CPU-second of this process (best round), which is stable on a shared machine.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from router.filters import compile_patterns
from router.filters.reference import patterns_match

SEED = 20240601
N_EVENTS = 2000
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "ap-south-1", "sa-east-1"]
STATUSES = ["created", "paid", "shipped", "delivered", "cancelled", "refunded"]
TIERS = ["free", "silver", "gold", "platinum"]
DEVICE_KINDS = ["thermostat", "meter", "camera", "lock", "sensor"]


def make_order(rng: random.Random, i: int) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {
            "sku": f"SKU-{rng.randrange(400)}-{rng.choice(['red', 'blue', 'green'])}",
            "qty": rng.randrange(1, 5),
            "price": round(rng.uniform(1, 300), 2),
            "tags": rng.sample(["sale", "new", "fragile", "gift", "bulk"], 2),
        }
        for _ in range(rng.randrange(1, 4))
    ]
    return {
        "type": "order",
        "id": f"ord-{i:08d}",
        "region": rng.choice(REGIONS),
        "status": rng.choice(STATUSES),
        "customer": {
            "id": f"c{rng.randrange(1000)}",
            "tier": rng.choice(TIERS),
            "email": f"user{rng.randrange(10**6)}@example.com",
            "address": {"city": "Lyon", "country": rng.choice(["FR", "DE", "US", "BR"])},
        },
        "items": items,
        "total": round(sum(it["price"] * it["qty"] for it in items), 2),
        "currency": "EUR",
        "created": f"2024-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T10:00:00Z",
        "payment": {
            "method": rng.choice(["card", "paypal", "transfer"]),
            "3ds": rng.random() < 0.5,
        },
        "notes": "x" * rng.randrange(420, 560),
    }


def make_reading(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "type": "telemetry",
        "device": {
            "id": f"dev-{rng.randrange(5000)}",
            "kind": rng.choice(DEVICE_KINDS),
            "firmware": f"{rng.randrange(1, 4)}.{rng.randrange(10)}.{rng.randrange(10)}",
            "site": {"id": f"site-{rng.randrange(200)}", "region": rng.choice(REGIONS)},
        },
        "ts": 1_700_000_000 + i,
        "metrics": {
            "temperature": round(rng.uniform(-20, 45), 2),
            "humidity": rng.randrange(0, 101),
            "battery": round(rng.uniform(0, 1), 3),
        },
        "alarms": [{"code": f"A{rng.randrange(50)}", "level": rng.randrange(1, 4)}]
        if rng.random() < 0.3
        else [],
        "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        "labels": {f"k{j}": f"v{rng.randrange(100)}" for j in range(8)},
        "raw": [rng.randrange(1000) for _ in range(85)],
    }


def make_audit(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "type": "audit",
        "source": rng.choice(["aws.s3", "aws.ec2", "aws.iam", "app.billing"]),
        "detail-type": rng.choice(["API Call", "State Change", "Login"]),
        "detail": {
            "eventName": rng.choice(["PutObject", "GetObject", "DeleteObject", "RunInstances"]),
            "user": {"name": f"user-{rng.randrange(300)}", "mfa": rng.random() < 0.7},
            "request": {"bucket": f"bucket-{rng.randrange(50)}", "key": f"logs/{i}.json"},
            "sourceIPAddress": f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
            "resources": [f"arn:aws:s3:::bucket-{rng.randrange(50)}/obj{j}" for j in range(3)],
        },
        "time": f"2024-05-{rng.randrange(10, 29)}T12:00:00Z",
        "account": str(rng.randrange(10**11, 10**12)),
        "padding": "y" * rng.randrange(620, 820),
    }


def make_events() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    makers = [make_order, make_reading, make_audit]
    return [{"body": makers[i % 3](rng, i)} for i in range(N_EVENTS)]


def make_patterns(n: int) -> list[str]:
    """Typical filters: each keys on a type and an id-like field, plus a few conditions."""
    rng = random.Random(SEED + n)
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            p: dict[str, Any] = {
                "body": {
                    "type": ["order"],
                    "customer": {"id": [f"c{rng.randrange(1000)}"]},
                    "total": [{"numeric": [">", rng.randrange(10, 500)]}],
                }
            }
        elif kind == 1:
            p = {
                "body": {
                    "type": ["order"],
                    "items": {"sku": [{"prefix": f"SKU-{rng.randrange(400)}-"}]},
                    "status": [{"anything-but": ["cancelled", "refunded"]}],
                }
            }
        elif kind == 2:
            p = {
                "body": {
                    "device": {"id": [f"dev-{rng.randrange(5000)}"]},
                    "metrics": {"temperature": [{"numeric": [">=", rng.randrange(20, 40)]}]},
                }
            }
        elif kind == 3:
            p = {
                "body": {
                    "detail": {
                        "user": {"name": [f"user-{rng.randrange(300)}"]},
                        "eventName": [{"prefix": "Delete"}, "PutObject"],
                    }
                }
            }
        else:
            p = {
                "body": {
                    "device": {"site": {"id": [f"site-{rng.randrange(200)}"]}},
                    "$or": [
                        {"alarms": {"level": [{"numeric": [">=", 2]}]}},
                        {"metrics": {"battery": [{"numeric": ["<", 0.1]}]}},
                    ],
                }
            }
        out.append(p)
    return [json.dumps(p) for p in out]


def rate(fn: Callable[[dict[str, Any]], bool], events: list[dict[str, Any]], min_s: float) -> float:
    """Best events/s of ``fn`` over ``events`` among repeated rounds lasting ``min_s`` in all.

    Measured in CPU time of this process, best round kept: the machine is shared, and CPU
    time of the least disturbed round is the figure that compares runs.
    """
    best = 0.0
    deadline = time.perf_counter() + min_s
    while True:
        start = time.process_time()
        for event in events:
            fn(event)
        elapsed = time.process_time() - start
        if elapsed > 0:
            best = max(best, len(events) / elapsed)
        if time.perf_counter() >= deadline:
            return best


def _reference(patterns: list[str], event: dict[str, Any]) -> bool:
    return patterns_match(patterns, event)


def main() -> None:
    events = make_events()
    sizes = [len(json.dumps(e)) for e in events]
    print(
        f"{len(events)} events, {sum(sizes) / len(sizes):.0f} bytes average JSON size "
        f"(min {min(sizes)}, max {max(sizes)})"
    )
    header = (
        f"{'patterns':>8} {'matched':>8} {'compiled ev/s':>14} {'reference ev/s':>15} "
        f"{'compiled/ref':>13} {'vs 5 patterns':>14}"
    )
    print(header)
    print("-" * len(header))
    base: float | None = None
    for n in (5, 50, 500, 1000):
        patterns = make_patterns(n)
        matcher = compile_patterns(patterns)
        matched = sum(matcher.matches(e) for e in events)
        assert all(
            matcher.matches(e) == patterns_match(patterns, e)
            for e in events[:: 200 if n > 50 else 20]
        ), "compiled and reference disagree"
        compiled = rate(matcher.matches, events, 2.0)
        ref_events = events[: max(20, 2000 // n)]
        reference = rate(partial(_reference, patterns), ref_events, 1.0)
        base = base or compiled
        print(
            f"{n:>8} {matched:>8} {compiled:>14,.0f} {reference:>15,.0f} "
            f"{compiled / reference:>12,.0f}x {compiled / base:>13.2f}x"
        )


if __name__ == "__main__":
    main()
