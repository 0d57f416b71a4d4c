"""How a Kafka source is a member of its consumer group: static membership (KIP-345) when
the cluster handles it, dynamic membership otherwise.

A static member joins with a ``group.instance.id`` made of the replica id and the mapping.
When it restarts within the session timeout, the group hands it its partitions back at once
instead of waiting for the old session to expire (which, after a ``kill -9``, is what a
dynamic member waits for). A static member that stops does not leave the group: its
partitions move when its session expires.

Two ways a cluster may not handle it, both noticed and logged once per mapping start:

- brokers older than Kafka 2.3 (no JoinGroup v5): aiokafka then drops the instance id
  without a word; the source reads the API versions and says so;
- a join that does not complete (tansu 0.6.0 never completes the join of a static member
  when the group's leader was another static member that is gone): after
  :func:`static_join_limit` seconds the source joins as a dynamic member instead.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer

JOIN_GROUP_API = 11
STATIC_JOIN_VERSION = 5
"""JoinGroup v5 (Kafka 2.3) is the first to carry ``group.instance.id``."""
INSTANCE_ID_MAX = 249
"""Kafka's limit on ``group.instance.id`` (characters ``[A-Za-z0-9._-]``)."""


def group_instance_id(replica_id: str, mapping: str) -> str:
    """The static member id of ``replica_id`` in the group of ``mapping`` (its uuid): stable
    across restarts, distinct per replica and per mapping (two mappings may share a group)."""
    replica = re.sub(r"[^A-Za-z0-9._-]", "_", replica_id)
    text = f"{replica}.{mapping}"
    if len(text) > INSTANCE_ID_MAX:
        digest = hashlib.sha256(replica_id.encode()).hexdigest()[:16]
        text = f"{digest}.{mapping}"[:INSTANCE_ID_MAX]
    return text


def static_join_limit(session_timeout_ms: int) -> float:
    """Seconds a static member's join may take before the source gives up on static
    membership. A healthy join takes a few seconds: Kafka answers at once a static member
    that comes back, or after the other members rejoined (each within its revoke timeout);
    tansu holds every join for half the session timeout, and a static one 3 s more."""
    return session_timeout_ms / 2000 + 15


def static_membership_supported(consumer: AIOKafkaConsumer) -> bool | None:
    """Whether the brokers the started consumer talks to accept JoinGroup v5; None when it
    cannot be told. Read from the API versions of aiokafka's connections, which is not a
    public aiokafka API: anything unexpected means "cannot tell"."""
    try:
        connections = list(consumer._client._conns.values())
        ranges = [conn._versions.get(JOIN_GROUP_API) for conn in connections]
    except (AttributeError, TypeError):
        return None
    known = [r for r in ranges if isinstance(r, tuple) and len(r) == 2]
    if not known:
        return None
    return all(high >= STATIC_JOIN_VERSION for _, high in known)
