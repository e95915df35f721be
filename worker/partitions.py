"""What the worker does when its partitions move, and how far behind they are.

kafka-python 3 runs rebalance listeners on its own IO thread, where nothing may
block: ``kafka_io.Rebalance`` only records revoked and assigned partitions there,
and ``Partitions.apply`` acts on them in the loop, right after ``poll()``:

- revoked: the frames still buffered for them (batcher, records read ahead) are dropped
  (their next owner reads them from the committed offset), their open offsets and lag forgotten;
- assigned: each is rewound to its committed offset, as a new owner would start; one without a committed
  offset starts where ``--start-from`` says (worker/start_position.py: for latest, the first frame published
  since this worker started), and that start is committed at once, so a later owner resumes there too
  (a partition held but never committed, then reassigned, was read from the new owner's join: what was
  published meanwhile was skipped). Frames a start passes over are logged and counted
  (``framewatch_frames_skipped_total``).

Lag (messages behind the log end, per partition) is read every ``LAG_EVERY_S``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from kafka import TopicPartition
from kafka.errors import KafkaError

from worker import kafka_io
from worker.batcher import Batcher
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.read_ahead import ReadAhead
from worker.start_position import OffsetLookup, Start, StartPosition
from worker.watchdog import Watchdog

log = logging.getLogger(__name__)

LAG_EVERY_S = 5.0


class Partitions:
    def __init__(self, rebalance: kafka_io.Rebalance, batcher: Batcher[Any], ahead: ReadAhead, tracker: OffsetTracker,
                 watchdog: Watchdog, metrics: WorkerMetrics, start: StartPosition,
                 lookup: Callable[[Any], OffsetLookup], clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        """``lookup(consumer)`` finds offsets by time (``kafka_io.Lookup``); it is closed after each use."""
        self.rebalance, self.batcher, self.ahead, self.tracker = rebalance, batcher, ahead, tracker
        self.watchdog, self.metrics, self.clock = watchdog, metrics, clock
        self.start, self.lookup = start, lookup
        self.lags: dict[TopicPartition, int] = {}
        self._last_lag = 0.0

    def apply(self, consumer: Any, held: bool) -> set[TopicPartition]:
        """Act on what the client's listener recorded during poll(): never inside the callback itself.
        Returns the partitions assigned (each rewound to its committed offset; paused if ``held``)."""
        revoked, assigned = self.rebalance.take()
        if revoked:
            dropped = self.batcher.drop(lambda f: TopicPartition(f.topic, f.partition) not in revoked)
            unread = self.ahead.drop(revoked)
            self.tracker.forget(revoked)
            self.lags = {tp: n for tp, n in self.lags.items() if tp not in revoked}
            self.watchdog.revoked(list(revoked))
            for tp in revoked:
                try:
                    self.metrics.lag.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass
            log.info("partitions revoked: %s (%d buffered frames left to their next owner)",
                     sorted(tp.partition for tp in revoked), len(dropped) + unread)  # fmt: skip
        if assigned:
            self._rewind(consumer, assigned)
            self.watchdog.assigned(list(assigned))
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
            if held:
                consumer.pause(*assigned)
        return assigned

    def _rewind(self, consumer: Any, assigned: set[TopicPartition]) -> None:
        """Start each assigned partition at its committed offset, as a new owner would.

        kafka-python 3 keeps the position of a partition held before and after a
        rebalance, but the worker forgot that partition's open frames when it was
        revoked (and dropped those still buffered): without this, they would be
        skipped and the next commit would pass them.
        """
        self.batcher.drop(lambda f: TopicPartition(f.topic, f.partition) not in assigned)
        self.ahead.drop(assigned)
        self.tracker.forget(assigned)
        uncommitted = []
        for tp in assigned:
            try:
                committed = consumer.committed(tp)
            except KafkaError as e:
                log.warning("committed offset of %s/%d unknown (%s): asked again", tp.topic, tp.partition, e)
                self.rebalance.on_partitions_assigned([tp])
                continue
            if committed is not None:
                consumer.seek(tp, committed)
            else:
                uncommitted.append(tp)
        if uncommitted:
            self._start(consumer, uncommitted)

    def _start(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Start partitions without a committed offset where --start-from says, and commit that start."""
        lookup = self.lookup(consumer)
        try:
            for tp in sorted(partitions):
                try:
                    start = self.start.find(tp, lookup)
                    consumer.seek(tp, start.offset)
                    kafka_io.commit(consumer, {tp: start.offset})
                except KafkaError as e:
                    log.warning("start of %s/%d not set (%s): asked again", tp.topic, tp.partition, e)
                    self.rebalance.on_partitions_assigned([tp])
                    continue
                self._report(tp, start)
        finally:
            lookup.close()

    def _report(self, tp: TopicPartition, start: Start) -> None:
        where = (
            f"partition {tp.topic}/{tp.partition} has no committed offset: it starts at offset {start.offset}"
        )
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

    @staticmethod
    def put_back(consumer: Any, records: list[Any]) -> None:
        """Records that arrived while held (a partition assigned during the poll): read them again later."""
        first: dict[TopicPartition, int] = {}
        for msg in records:
            first.setdefault(TopicPartition(msg.topic, msg.partition), msg.offset)
        for tp, offset in first.items():
            consumer.seek(tp, offset)

    def update_lag(self, consumer: Any) -> None:
        now = self.clock()
        if now - self._last_lag < LAG_EVERY_S:
            return
        self._last_lag = now
        try:
            lags = kafka_io.lag(consumer)
        except KafkaError as e:
            log.debug("lag not updated: %s", e)
            return
        for tp, behind in lags.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(behind)
        self.watchdog.lag(lags)
        self.lags = lags

    def total_lag(self) -> int | None:
        return sum(self.lags.values()) if self.lags else None
