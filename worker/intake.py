"""Intake: the records the worker takes from Kafka, and what it does when its partitions move or it must hold.

The first part of the data path (README, "Architecture"). ``Intake.poll``
hands the loop up to a batch's room in records, in offset order per
partition, and acts on what happened meanwhile; nothing here decodes a frame.

- **Read ahead.** kafka-python sends its next fetch for a partition only once
  the records of the last one are all taken, and a broker holds a fetch for up
  to ``fetch_max_wait_ms`` while a partition in it has nothing new. A loop that
  took fewer records than a fetch brought let the client fetch for the idle
  partitions alone: with one idle partition of two, ``--max-batch 8`` read 51
  frames/s instead of about 1,700. So every poll takes everything the client
  holds and keeps the rest here. What is held here is not consumed yet: no
  offset of it is open, so no commit passes it.
- **Rebalances.** Clients report revocations and assignments from inside
  ``poll()`` (kafka-python on its IO thread, where nothing may block) to a
  ``Rebalances`` recorder; they are acted on here, right after ``poll()``:
  - revoked: the frames still buffered for them (batcher, read ahead) are
    dropped, their open offsets and lag forgotten; their next owner reads them
    from the committed offset;
  - assigned: each is rewound to its committed offset, as a new owner would
    start (a client keeps the position of a partition held before and after a
    rebalance, but its open frames were forgotten: without the rewind they would
    be skipped). One without a committed offset starts where ``--start-from``
    says (worker/start_position.py), and that start is committed at once, so a
    later owner resumes there too. Frames a start passes over are logged and
    counted (``framewatch_frames_skipped_total``).
- **Holding.** While the worker cannot score or deliver (no index yet, outputs
  unacknowledged), its partitions are paused; records that arrive anyway (a
  partition assigned during the poll) and those read ahead are read again later
  from the first of them.
- **Lag**: records behind the log's end, per partition, read every ``LAG_EVERY_S``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Optional

from worker.batcher import Batcher
from worker.kafka_port import BrokerError, Consumer, Partition, Polled, Rebalances, Record
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.start_position import Start, StartPosition
from worker.watchdog import Watchdog

log = logging.getLogger(__name__)

LAG_EVERY_S = 5.0


class Intake:
    def __init__(self, rebalances: Rebalances, batcher: Batcher[Any], offsets: OffsetTracker, watchdog: Watchdog,
                 metrics: WorkerMetrics, start: StartPosition, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.rebalances, self.batcher, self.offsets = rebalances, batcher, offsets
        self.watchdog, self.metrics, self.start, self.clock = watchdog, metrics, start, clock
        self.hold: Optional[str] = None  # why consumption is held, while it is
        self.lags: dict[Partition, int] = {}
        self._ahead: deque[Polled] = deque()
        self._last_lag = 0.0

    def __len__(self) -> int:
        """Records read ahead."""
        return len(self._ahead)

    # -- records ---------------------------------------------------------------------------
    def poll(self, consumer: Consumer, room: int, wait_s: float) -> list[Polled]:
        """Up to ``room`` records: those read ahead first; the client is asked only when they are fewer (then
        without waiting, else up to ``wait_s``). Rebalances reported meanwhile are acted on; while held,
        nothing is returned and what came is read again later."""
        if len(self._ahead) < room:
            self._ahead.extend(consumer.poll(0.0 if self._ahead else wait_s))
        assigned = self._rebalanced(consumer)
        if assigned:  # rewound: read again from the committed offset
            self._drop(assigned)
        if self.hold is not None:
            self._put_back(consumer)
            return []
        taken = [self._ahead.popleft() for _ in range(min(room, len(self._ahead)))]
        for message in taken:  # consumed: open until its output is acknowledged
            self.offsets.opened(message.where, message.offset)
            self.watchdog.consumed(message.where)
        self.metrics.consumed.inc(sum(isinstance(m, Record) for m in taken))
        return taken

    def _drop(self, parts: set[Partition]) -> int:
        """Forget what is buffered for ``parts`` (revoked, or rewound to their committed offset)."""
        dropped = len(self.batcher.drop(lambda f: f.where not in parts))
        kept = deque(r for r in self._ahead if r.where not in parts)
        dropped, self._ahead = dropped + len(self._ahead) - len(kept), kept
        return dropped

    def _put_back(self, consumer: Consumer) -> None:
        """Held: everything read ahead is read again later, from the first of it."""
        first: dict[Partition, int] = {}
        for rec in self._ahead:
            first.setdefault(rec.where, rec.offset)
        self._ahead.clear()
        for part, offset in first.items():
            consumer.seek(part, offset)

    # -- holding ---------------------------------------------------------------------------
    def set_hold(self, consumer: Consumer, reason: Optional[str]) -> None:
        """Pause every partition held while ``reason`` says why; resume when it is None."""
        if reason is not None:
            self.watchdog.holding()
            if self.hold is None:
                log.warning("%s: holding consumption", reason)
            self.hold = reason
            consumer.pause(consumer.assignment())
        elif self.hold is not None:
            self.hold = None
            consumer.resume(consumer.assignment())
            log.info("consuming")

    # -- rebalances ------------------------------------------------------------------------
    def _rebalanced(self, consumer: Consumer) -> set[Partition]:
        """Act on what the client reported during poll(); returns the partitions assigned (rewound)."""
        revoked, assigned = self.rebalances.take()
        if revoked:
            dropped = self._drop(revoked)
            self.offsets.forget(revoked)
            self.lags = {p: n for p, n in self.lags.items() if p not in revoked}
            self.watchdog.revoked(list(revoked))
            for part in revoked:
                try:
                    self.metrics.lag.remove(part.topic, str(part.partition))
                except KeyError:
                    pass
            log.info("partitions revoked: %s (%d buffered frames left to their next owner)",
                     sorted(p.partition for p in revoked), dropped)  # fmt: skip
        if assigned:
            self._drop(assigned)
            self.offsets.forget(assigned)
            self._rewind(consumer, assigned)
            self.watchdog.assigned(list(assigned))
            log.info("partitions assigned: %s", sorted(p.partition for p in assigned))
            if self.hold is not None:
                consumer.pause(assigned)
        return assigned

    def _rewind(self, consumer: Consumer, assigned: set[Partition]) -> None:
        """Each assigned partition from its committed offset; one without, from its start (committed at once).
        A partition the broker could not answer for is asked again after the next poll."""
        uncommitted = []
        for part in sorted(assigned):
            try:
                committed = consumer.committed(part)
                if committed is not None:
                    consumer.seek(part, committed)
                else:
                    uncommitted.append(part)
            except BrokerError as e:
                log.warning("committed offset of %s unknown (%s): asked again", part, e)
                self.rebalances.assigned([part])
        if not uncommitted:
            return
        lookup = consumer.lookup()
        try:
            for part in uncommitted:
                try:
                    start = self.start.find(part, lookup)
                    consumer.seek(part, start.offset)
                    consumer.commit({part: start.offset})
                except BrokerError as e:
                    log.warning("start of %s not set (%s): asked again", part, e)
                    self.rebalances.assigned([part])
                    continue
                self._report(part, start)
        finally:
            lookup.close()

    def _report(self, part: Partition, start: Start) -> None:
        where = f"partition {part} has no committed offset: it starts at offset {start.offset}"
        if start.since_ms is None:
            log.info("%s, its first record (--start-from earliest)", where)
            return
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start.since_ms / 1000))
        first = f"{where}, the first frame published since {since} (this worker's start, less {self.start.slack_s:g}s)"
        if start.skipped:
            self.metrics.frames_skipped.inc(start.skipped)
            log.warning("%s; %d older frames there are skipped (--start-from latest; earliest scores them)",
                        first, start.skipped)  # fmt: skip
        else:
            log.info("%s; nothing older there", first)

    # -- lag -------------------------------------------------------------------------------
    def update_lag(self, consumer: Consumer) -> None:
        now = self.clock()
        if now - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = now
        try:
            lags = consumer.lag()
        except BrokerError as e:
            log.debug("lag not updated: %s", e)
            return
        for part, behind in lags.items():
            self.metrics.lag.labels(part.topic, str(part.partition)).set(behind)
        self.watchdog.lag(lags)
        self.lags = lags

    def total_lag(self) -> Optional[int]:
        return sum(self.lags.values()) if self.lags else None
