"""What each index version called anomalous, counted per minute and added to Redis counters.

``framewatch index status NAME`` shows the recent alarm rate of the active
version and of each candidate. The counts come from the workers: the scoring
thread tallies every record (the active verdict, and each candidate's verdict
in ``shadow``) in memory, per (index, version, epoch minute); a thread of its
own adds the tally to Redis every ``FLUSH_EVERY_S`` (HINCRBY, through
``IndexRepository.count_verdicts``), so any number of workers add up to one
count per version, and a status read is a few HGETALLs, not a scan of the
scores topic. A candidate's counter also holds how many of the same frames
the active version called anomalous, so the two rates compare like for like.

Counts are approximate in the way the topic is: a frame scored twice after a
crash is counted twice, and a worker killed with SIGKILL loses at most its
last few seconds of counts. With Redis unreachable the tally is kept (up to
``MAX_PENDING`` entries) and added once Redis is back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable

import redis

from index_store.repository import IndexRepository, VerdictCount
from wire.records import ScoreRecord

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 5.0
MAX_PENDING = 100_000  # (index, version, minute) entries held while Redis is unreachable; more are dropped
Key = tuple[str, int, int]  # (index name, version, epoch minute)


class VerdictTally:
    """Counts of scored frames and alarms per (index, version, minute); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._counts: dict[Key, list[int]] = {}
        self._lock = threading.Lock()

    def add(self, records: Iterable[ScoreRecord]) -> None:
        """Count each record's active verdict and its candidates' (``shadow``) verdicts."""
        minute = int(self.clock() // 60)
        with self._lock:
            for r in records:
                self._bump((r.index_name, r.index_version, minute), r.is_anomaly, r.is_anomaly)
                for s in r.shadow or ():
                    self._bump((r.index_name, int(s["version"]), minute), bool(s["is_anomaly"]), r.is_anomaly)

    def _bump(self, key: Key, alarm: bool, active_alarm: bool) -> None:
        c = self._counts.get(key)
        if c is None:
            if len(self._counts) >= MAX_PENDING:
                return
            c = self._counts[key] = [0, 0, 0]
        c[0] += 1
        c[1] += alarm
        c[2] += active_alarm

    def take(self) -> dict[Key, VerdictCount]:
        """Everything counted since the last take, emptied."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return {k: VerdictCount(*c) for k, c in counts.items()}

    def put_back(self, counts: dict[Key, VerdictCount]) -> None:
        """Counts a flush could not write, kept for the next one (within MAX_PENDING)."""
        with self._lock:
            for key, c in counts.items():
                held = self._counts.get(key)
                if held is None and len(self._counts) >= MAX_PENDING:
                    continue
                held = self._counts.setdefault(key, [0, 0, 0])
                held[0] += c.scored
                held[1] += c.alarms
                held[2] += c.active_alarms


class VerdictFlusher:
    """Adds the tally to Redis every ``every_s`` on its own thread, and once more on stop."""

    def __init__(self, tally: VerdictTally, repo_factory: Callable[[], IndexRepository],
                 every_s: float = FLUSH_EVERY_S) -> None:  # fmt: skip
        self.tally, self.repo_factory, self.every_s = tally, repo_factory, every_s
        self._repo: IndexRepository | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="verdict-counts", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.flush()
        self.flush()

    def flush(self) -> bool:
        """Write what was counted; False (logged once per outage, counts kept) when Redis fails."""
        counts = self.tally.take()
        if not counts:
            return True
        try:
            if self._repo is None:
                self._repo = self.repo_factory()
            self._repo.count_verdicts(counts)
        except (redis.RedisError, OSError) as e:
            self.tally.put_back(counts)
            self._repo = None
            if not self._failing:
                log.warning("verdict counts (index status) not written to Redis: %s; kept, retrying", e)
            self._failing = True
            return False
        if self._failing:
            log.info("verdict counts written to Redis again")
        self._failing = False
        return True
