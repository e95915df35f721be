"""Is it safe to keep indexes in this Redis? Its ``maxmemory-policy`` decides.

Under an ``allkeys-*`` policy Redis evicts *any* key once ``maxmemory`` is
reached: a publish that pushed it over evicted the active version itself
(vectors, metadata, pointer and counter), and ``index list`` then said "no
indexes". framewatch therefore refuses to publish there, and a worker says so
at start-up and on /readyz.

The ``volatile-*`` policies evict only keys that carry a TTL. framewatch writes
every index key (vectors, metadata, adapted weights, pointer, counter, names,
review answers) without a TTL; only the workers' heartbeat keys expire. So
``volatile-*`` is accepted: at ``maxmemory`` it evicts heartbeats, then refuses
writes as ``noeviction`` does (a publish then fails whole, in its MULTI/EXEC,
and says so). It stays safe only while nothing else sets a TTL on framewatch's
keys (docs/security.md, "Redis").

A Redis that will not say its policy (``CONFIG`` and ``INFO`` both denied by
ACLs, as some managed services do) is accepted with a warning: the operator
has to check it.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import redis

from index_store.errors import IndexStoreError

log = logging.getLogger(__name__)

SAFE_POLICIES = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
UNSAFE_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


class EvictionUnsafe(IndexStoreError):
    """Redis may evict index keys (an ``allkeys-*`` maxmemory-policy): nothing is published there."""


def maxmemory_policy(client: redis.Redis) -> Optional[str]:
    """The server's ``maxmemory-policy``; None when Redis will not say (both ways denied).

    ``INFO memory`` first (managed services that rename or forbid ``CONFIG`` still answer it), then
    ``CONFIG GET``.

    :raises redis.ConnectionError: Redis is unreachable.
    """
    try:
        info: Any = client.info("memory")
        policy = info.get("maxmemory_policy")
        if policy:
            return _text(policy)
    except redis.ResponseError:
        pass
    try:
        got: Any = client.config_get("maxmemory-policy")
        policy = got.get("maxmemory-policy") or got.get(b"maxmemory-policy")
        return _text(policy) if policy else None
    except redis.ResponseError:
        return None


def eviction_risk(policy: Optional[str]) -> Optional[str]:
    """Why index keys could be evicted under ``policy`` (one sentence); None when they cannot."""
    if policy is None or policy in SAFE_POLICIES:
        return None
    if policy in UNSAFE_POLICIES:
        return (f"Redis maxmemory-policy is {policy}: at maxmemory Redis evicts any key, index versions and "
                "the active pointer included")  # fmt: skip
    return (
        f"Redis maxmemory-policy is {policy!r}, which framewatch does not know to be safe for its index keys"
    )


def require_safe_policy(client: redis.Redis) -> None:
    """Refuse to write indexes to a Redis that could evict them.

    :raises EvictionUnsafe: the policy could evict index keys.
    :raises redis.ConnectionError: Redis is unreachable.
    """
    policy = maxmemory_policy(client)
    if policy is None:
        log.warning("Redis does not say its maxmemory-policy (CONFIG and INFO denied): make sure it is "
                    "noeviction or volatile-*, or an index can be evicted")  # fmt: skip
        return
    risk = eviction_risk(policy)
    if risk is not None:
        raise EvictionUnsafe(f"{risk}; nothing published. Set maxmemory-policy noeviction (or volatile-lru) "
                             "on this Redis, or keep indexes in a Redis of their own (docs/security.md, Redis)")  # fmt: skip


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
