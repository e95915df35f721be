"""The alert loop: read the score topic in its own consumer group, decide, hand alerts to the sinks, commit.

The loop never waits for a sink: each sink has its own lane (delivery.py), so a
hanging webhook can neither push the consumer past its poll interval nor slow
stdout or Slack. An offset is committed once every alert up to it is settled
(delivered, or acknowledged on the alert dead-letter topic), so a crash re-reads
(the frame-id de-dup and cooldown absorb it) rather than loses. A commit refused
because the group rebalanced is logged and counted, never fatal: the records are
read again by the partition's next owner.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from alerting import kafka_io
from alerting.config import AlertConfig
from alerting.delivery import DeadLetterFn, Delivery
from alerting.incidents import IncidentEvent, IncidentTracker
from alerting.metrics import AlertMetrics
from alerting.noise import ALERT, NoiseFilter
from alerting.offsets import PendingOffsets
from alerting.sinks import Alert, Sink
from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 1.0


class AlertConsumer:
    def __init__(
        self, cfg: AlertConfig, sinks: Sequence[Sink], metrics: AlertMetrics,
        clock: Callable[[], float] = time.monotonic, dead_letter: Optional[DeadLetterFn] = None,
    ) -> None:  # fmt: skip
        if not sinks:
            raise ValueError("at least one sink")
        self.cfg, self.sinks, self.metrics, self.clock = cfg, list(sinks), metrics, clock
        self.started_at = cfg.started_at if cfg.started_at is not None else time.time()
        self.noise = NoiseFilter(cfg.noise, clock)
        self.incidents = IncidentTracker(cfg.incidents) if cfg.incidents is not None else None
        self.offsets = PendingOffsets()
        self.listener = kafka_io.Rebalance()
        self._dead_letter = dead_letter
        self._committed: dict[TopicPartition, int] = {}
        self._floor: dict[TopicPartition, int] = {}  # pinned partition -> start (ms); older records skipped
        self._last_commit = 0.0
        metrics.assigned.set_function(lambda: len(self.listener.current))
        metrics.unsettled.set_function(self.offsets.unsettled)

    def run(self, stop: threading.Event) -> int:
        """Consume until ``stop`` is set; returns the exit code."""
        producer = None
        if self._dead_letter is None:
            producer = kafka_io.DeadLetterProducer(self.cfg)
        sinks = list(self.sinks)
        topic_sink = None
        if self.incidents is not None:
            topic_sink = kafka_io.IncidentTopicSink(self.cfg)
            sinks.append(topic_sink)
            self._restore_incidents()
        delivery = Delivery(sinks, self.cfg.retry, self.metrics, self._dead_letter or producer,  # type: ignore[arg-type]
                            self.clock).start()  # fmt: skip
        consumer = kafka_io.make_consumer(self.cfg, self.listener)
        log.info("alerting on %s as group %s to %s; undeliverable alerts to %s", self.cfg.topics.scores,
                 self.cfg.group_id, ", ".join(repr(s) for s in self.sinks), self.cfg.alert_topics.dead_letters)  # fmt: skip
        try:
            while not stop.is_set():
                self._step(consumer, delivery)
        finally:
            if self.incidents is not None:
                for event in self.incidents.checkpoint():
                    self._submit_incident(event, delivery, lambda: None)
            delivery.close(self.cfg.drain_timeout_s)
            self._commit(consumer, force=True)
            consumer.close(autocommit=False)
            for closeable in (producer, topic_sink):
                if closeable is not None:
                    closeable.close()
        return 0

    def _restore_incidents(self) -> None:
        """Incidents still open when the alerter last stopped are taken up again, not reopened as new."""
        assert self.incidents is not None and self.cfg.incidents is not None
        since = time.time() - self.cfg.incidents.rebuild_window_s
        try:
            events = kafka_io.read_incident_events(self.cfg, since)
        except KafkaError as e:
            log.warning("could not read %s back (%s: %s): open incidents start afresh",
                        self.cfg.alert_topics.incidents, type(e).__name__, e)  # fmt: skip
            return
        n = self.incidents.restore(events)
        log.info(
            "incidents: %d still open, from %d event(s) on %s",
            n,
            len(events),
            self.cfg.alert_topics.incidents,
        )

    def _step(self, consumer: KafkaConsumer, delivery: Delivery) -> None:
        batch = self._poll(consumer)
        revoked, assigned = self.listener.take()
        if revoked:
            self.offsets.forget(revoked)
            for tp in revoked:
                self._committed.pop(tp, None)
                self._floor.pop(tp, None)
            self.metrics.revoked.inc(len(revoked))
            log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))
        if assigned:
            log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
        if self.incidents is not None and assigned:
            self.incidents.touch()  # nothing was read while unassigned: idle time starts now
        if self.incidents is not None and self.listener.current:
            for event in self.incidents.tick():
                self._submit_incident(event, delivery, lambda: None)
        for tp, messages in batch.items():
            for msg in messages:
                if self._before_start(tp, msg.timestamp):
                    self.offsets.read(tp, msg.offset)
                else:
                    self._one(tp, msg.offset, msg.value, delivery)
        self._commit(consumer)

    def _poll(self, consumer: KafkaConsumer) -> dict[TopicPartition, list[Any]]:
        try:
            return consumer.poll(timeout_ms=500)
        except NoOffsetForPartitionError as e:
            self._pin(consumer, e.args[0] if e.args else set())
        except OffsetOutOfRangeError as e:
            tps = list(e.args[0]) if e.args and isinstance(e.args[0], dict) else []
            log.warning("committed offsets out of range on partitions %s (retention passed them): "
                        "continuing at the oldest retained score", sorted(tp.partition for tp in tps))  # fmt: skip
            if tps:
                consumer.seek_to_beginning(*tps)
        except KafkaError as e:
            log.warning("poll failed: %s: %s; trying again", type(e).__name__, e)
            time.sleep(0.5)
        return {}

    def _pin(self, consumer: KafkaConsumer, tps: Iterable[TopicPartition]) -> None:
        try:
            skipped = kafka_io.pin_start(consumer, tps, self.started_at)
        except KafkaError as e:
            log.warning("could not look up start offsets (%s: %s); trying again", type(e).__name__, e)
            time.sleep(0.5)
            return
        for tp, (offset, n) in sorted(skipped.items()):
            self.metrics.start_skipped.inc(n)
            self._floor[tp] = int(self.started_at * 1000)
            log.info("partition %d has no committed offset: starting at offset %d, the first score published "
                     "after the alerter started (%d older record(s) skipped)", tp.partition, offset, n)  # fmt: skip

    def _before_start(self, tp: TopicPartition, timestamp: Optional[int]) -> bool:
        """A record of a pinned partition stamped before the start: skipped (a broker whose end offset lags
        its last batch, as Tansu's does, would otherwise hand back a few old scores). Cleared at the first
        newer record, so a later clock jump on one worker cannot hide scores."""
        floor = self._floor.get(tp)
        if floor is None:
            return False
        if timestamp is not None and 0 <= timestamp < floor:
            self.metrics.start_skipped.inc()
            return True
        del self._floor[tp]
        return False

    def _one(self, tp: TopicPartition, offset: int, value: bytes, delivery: Delivery) -> None:
        try:
            record = ScoreRecord.decode(value)
        except ScoreDecodeError as e:
            self.metrics.undecodable.inc()
            log.warning("skipping an undecodable score record: %s", e)
            self.offsets.read(tp, offset)
            return
        decision = self.noise.decide(record)
        self.metrics.records.labels(decision.outcome).inc()
        if self.incidents is not None:
            events = self.incidents.observe(record, decision.outcome)
            release = self.offsets.read(tp, offset, holds=len(events))
            for event in events:
                self._submit_incident(event, delivery, release)
            return
        if decision.outcome != ALERT:
            self.offsets.read(tp, offset)
            return
        release = self.offsets.read(tp, offset, holds=1)
        delivery.submit(Alert(record, decision.suppressed, self._link(record)), release)

    def _submit_incident(self, event: IncidentEvent, delivery: Delivery, done: Callable[[], None]) -> None:
        self.metrics.incident_events.labels(event.state).inc()
        log.info("incident %s on %s: %s (%s, %d frame(s))", event.key, event.source, event.state,
                 event.incident["kind"], event.incident["count"])  # fmt: skip
        link = self._link_id(str(event.incident["peak_frame"]["frame_id"]))
        event = IncidentEvent(event.state, event.incident, event.notify, link)
        delivery.submit(event, done, to=lambda sink: event.notify or sink.name == "incidents")  # type: ignore[arg-type]

    def _commit(self, consumer: KafkaConsumer, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_commit < COMMIT_EVERY_S:
            return
        self._last_commit = now
        current = self.listener.current
        positions = {tp: off for tp, off in self.offsets.committable().items()
                     if tp in current and self._committed.get(tp) != off}  # fmt: skip
        if not positions:
            return
        try:
            kafka_io.commit(consumer, positions)
        except KafkaError as e:
            self.metrics.commit_failures.inc()
            log.warning("commit refused (%s: %s); the group is rebalancing: uncommitted scores are read again "
                        "by their next owner", type(e).__name__, e)  # fmt: skip
            return
        self._committed.update(positions)

    def _link(self, record: ScoreRecord) -> str:
        return self._link_id(record.frame_id)

    def _link_id(self, frame_id: str) -> str:
        base = self.cfg.review_url.rstrip("/")
        return f"{base}/#{frame_id}" if base else ""
