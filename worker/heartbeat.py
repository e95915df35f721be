"""A worker's heartbeat in Redis: what it serves, as JSON under a key that expires (arq's health key).

    {prefix}:worker:{id}:health = {"worker_id", "at", "ttl_s", ...state}  (EX ttl_s)

The worker calls ``beat(state)`` every few seconds with whatever it knows
(group, partitions, index versions served, lag, readiness); a worker that dies
stops beating and its key vanishes after ``ttl_s``. ``framewatch status``
reads every key with ``read_all``. Values are JSON, never pickles.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import redis

from index_store.repository import IndexRepository

log = logging.getLogger(__name__)


class Heartbeat:
    """Writes one worker's state to its health key with an expiry.

    ``state`` is any JSON-able dict; the conventional fields are ``group`` (str),
    ``partitions`` (list of int), ``indexes`` ({name: version}), ``lag`` (int or None)
    and ``ready`` (bool) with ``detail`` (str).
    """

    def __init__(
        self, repo: IndexRepository, worker_id: str, ttl_s: float = 30.0, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        if ttl_s <= 0:
            raise ValueError("heartbeat ttl must be positive")
        self.repo, self.worker_id, self.ttl_s, self.clock = repo, worker_id, ttl_s, clock

    def beat(self, state: dict[str, Any]) -> bool:
        """Write the state; False (logged, not raised) when Redis is unreachable: a heartbeat never stops a worker."""
        body = {**state, "worker_id": self.worker_id, "at": self.clock(), "ttl_s": self.ttl_s}
        try:
            self.repo.write_health(self.worker_id, json.dumps(body, sort_keys=True), self.ttl_s)
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            log.warning("heartbeat not written: %s", e)
            return False

    def run(self, state: Callable[[], dict[str, Any]], stop: threading.Event, every_s: float) -> None:
        """Beat ``state()`` every ``every_s`` until ``stop`` is set, then clear the key (a clean shutdown)."""
        while True:
            self.beat(state())
            if stop.wait(every_s):
                break
        self.clear()

    def clear(self) -> None:
        """Remove the key on a clean shutdown, so status stops listing this worker at once."""
        try:
            self.repo.clear_health(self.worker_id)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            log.warning("heartbeat not cleared: %s", e)


def read_all(repo: IndexRepository) -> list[dict[str, Any]]:
    """Every live worker's last heartbeat, sorted by worker id; unreadable values are skipped."""
    out = []
    for raw in repo.read_health():
        try:
            state = json.loads(raw)
        except ValueError:
            continue
        if isinstance(state, dict):
            out.append(state)
    return sorted(out, key=lambda s: str(s.get("worker_id", "")))
