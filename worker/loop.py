"""The worker's lifecycle: start -> loop until the stop event -> drain -> close.

Data path per message: FrameRecord.decode -> decode_image -> Batcher ->
Scorer (embed + kNN) -> score records to the score topic; any failure on the
way -> a dead letter. Offsets are committed only after every output of the
messages before them is acknowledged, so each consumed frame ends as a score
record or a dead letter, at least once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Optional

import redis
from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from prometheus_client import CollectorRegistry

from index_store.embedder import Embedder
from index_store.errors import IndexStoreError
from index_store.repository import IndexRepository
from index_store.spec import EmbedderSpec
from wire.errors import FrameDecodeError
from wire.records import DeadLetter, FrameRecord
from worker import kafka_io
from worker.batcher import Batcher
from worker.config import WorkerConfig
from worker.decode import decode_image
from worker.health import HealthServer
from worker.indexes import IndexSet
from worker.kafka_io import DeliveryFailed
from worker.metrics import WorkerMetrics
from worker.routing import Routing
from worker.scoring import PendingFrame, Scorer

log = logging.getLogger(__name__)

EmbedderFactory = Callable[[EmbedderSpec], Any]


class Worker:
    def __init__(
        self,
        cfg: WorkerConfig,
        registry: Optional[CollectorRegistry] = None,
        embedder_factory: Optional[EmbedderFactory] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.worker_id = cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.routing = Routing.parse(cfg.index, list(cfg.routes))
        self.clock = clock
        self.embedder_factory = embedder_factory or (
            lambda spec: Embedder(spec, device=cfg.device, precision=cfg.precision, batch_size=cfg.max_batch)
        )
        self.indexes = IndexSet(self._repository, self.routing.names(), self.metrics, cfg.index_poll_s)
        self.batcher: Batcher[PendingFrame] = Batcher(cfg.max_batch, cfg.max_wait_s, clock)
        self.scorer: Optional[Scorer] = None
        self.consumer: Any = None
        self.outbox: Optional[kafka_io.Outbox] = None
        self.health: Optional[HealthServer] = None
        self._handled: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._paused: Optional[str] = None  # why consumption is paused, if it is
        self._undelivered: Optional[str] = None  # set while outputs wait for the broker's acknowledgement
        self._retry_delivery_at = 0.0
        self._embedder_error: Optional[str] = None
        self._closing = False
        self._beat = clock()
        self._stop = threading.Event()
        self._last_lag = 0.0
        self._embedder_retry_at = 0.0

    # -- lifecycle ---------------------------------------------------------------
    def _repository(self) -> IndexRepository:
        client = redis.Redis.from_url(
            self.cfg.redis.url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10,
            **({"ssl_ca_certs": self.cfg.redis.ssl_ca_certs} if self.cfg.redis.ssl_ca_certs else {}),
        )  # fmt: skip
        return IndexRepository(client, self.cfg.redis.key_prefix)

    def start(self) -> None:
        self.health = HealthServer(
            self.registry, self._alive, self._ready, self.cfg.metrics_host, self.cfg.metrics_port
        ).start()
        log.info("worker %s metrics on http://%s:%d/metrics", self.worker_id, self.cfg.metrics_host, self.health.port)
        self.indexes.start()
        self._connect_kafka()

    def _connect_kafka(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self.outbox = kafka_io.Outbox(kafka_io.make_producer(self.cfg))
                self.consumer = kafka_io.make_consumer(
                    self.cfg, kafka_io.Rebalance(self._on_revoked, self._on_assigned)
                )
                log.info("connected to kafka %s, group %s", self.cfg.kafka.redacted(), self.cfg.group_id)
                return
            except (KafkaError, OSError) as e:
                self.metrics.reconnects.labels("kafka").inc()
                log.warning("kafka %s unreachable (%s); retrying in %.1fs", self.cfg.kafka.redacted(), e, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def run(self, stop: Optional[threading.Event] = None) -> int:
        """Run until ``stop`` is set; returns the process exit code."""
        if stop is not None:
            self._stop = stop
        self.start()
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except (KafkaError, OSError) as e:  # e.g. the group coordinator lost mid-poll: wait, go on
                    self.metrics.reconnects.labels("kafka").inc()
                    log.warning("kafka: %s; retrying in 1s", e)
                    self._stop.wait(1.0)
            self.drain()
            return 0
        except DeliveryFailed as e:
            log.error("stopping without committing: %s", e)
            return 1
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group and stop; drain() has committed (or given up), so the revoke callback does nothing."""
        self._closing = True
        self.indexes.stop()
        for name, part in (("consumer", self.consumer), ("producer", self.outbox and self.outbox.producer)):
            if part is None:
                continue
            try:
                part.close(**({"autocommit": False} if name == "consumer" else {"timeout": 5}))
            except Exception as e:  # noqa: BLE001 - a broker gone at shutdown must not change the exit code
                log.warning("closing the kafka %s: %s", name, e)
        if self.health is not None:
            self.health.stop()

    def drain(self) -> None:
        """Score what is buffered, confirm, commit, within the drain limit."""
        deadline = self.clock() + self.cfg.drain_timeout_s
        if self.consumer is None:
            return
        if len(self.batcher) and self._ensure_scorer():
            while len(self.batcher):
                self._score_batch(self.batcher.take())
        self._confirm_and_commit(deadline)
        log.info("drained; offsets committed")

    # -- the loop -----------------------------------------------------------------
    def step(self) -> None:
        self._beat = self.clock()
        if self.consumer is None:
            self._connect_kafka()
            return
        hold = self._hold_reason()
        if hold:
            self._hold(hold)
            return
        self._resume()
        room = self.cfg.max_batch - len(self.batcher)
        wait_ms = int(max(0.0, self.batcher.time_left()) * 1000) if len(self.batcher) else 500
        records = self.consumer.poll(timeout_ms=max(wait_ms, 1), max_records=max(room, 1))
        for messages in records.values():
            for msg in messages:
                self._accept(msg)
        if self.batcher.ready():
            self._score_batch(self.batcher.take())
        if self.outbox is not None and (self.outbox.pending() or self._handled):
            if not len(self.batcher) or self.batcher.ready():
                self._deliver()
        self._update_lag()

    def _hold_reason(self) -> Optional[str]:
        """Why consumption must wait: no index (or embedder) yet, or outputs the broker has not acknowledged."""
        if not self.indexes.ready() or not self._ensure_scorer():
            return f"no index {self.routing.names()} loaded yet"
        if self._undelivered and self.clock() >= self._retry_delivery_at:
            self._deliver()
        return self._undelivered

    def _hold(self, reason: str) -> None:
        """Poll with every partition paused: the worker stays in its group and takes in nothing new."""
        self._pause(reason)
        for tp, messages in self.consumer.poll(timeout_ms=200).items():  # none expected; any that slip through
            self.consumer.seek(tp, messages[0].offset)  # are read again later

    def _deliver(self) -> None:
        """Confirm outputs, then commit. If the broker does not acknowledge them: keep them, hold, retry; no exit."""
        try:
            self._confirm_and_commit(self.clock() + self.cfg.drain_timeout_s)
        except DeliveryFailed as e:
            if not self._undelivered:
                log.error("%s; holding consumption and retrying with a new producer", e)
            self._undelivered = str(e)
            self._retry_delivery_at = self.clock() + 5.0
            try:  # a producer can be stuck for good (e.g. the broker lost its idempotence state)
                self.outbox.renew(kafka_io.make_producer(self.cfg))  # type: ignore[union-attr]
            except (KafkaError, OSError) as e2:
                log.warning("no new producer yet: %s", e2)
            return
        if self._undelivered:
            log.info("outputs acknowledged again")
        self._undelivered = None

    def _accept(self, msg: Any) -> None:
        self.metrics.consumed.inc()
        tp = TopicPartition(msg.topic, msg.partition)
        try:
            record = FrameRecord.decode(
                msg.key, msg.value, msg.headers,
                fallback_id=f"{msg.topic}/{msg.partition}/{msg.offset}",
                fallback_time=(msg.timestamp or 0) / 1000.0,
            )  # fmt: skip
            with self.metrics.stage_seconds.labels("decode").time():
                image = decode_image(record.image, record.content_type, self.cfg.limits)
        except Exception as e:  # noqa: BLE001 - a poison message must become a dead letter, never a crash loop
            reason, detail = (e.reason, e.message) if isinstance(e, FrameDecodeError) else (
                "undecodable", f"{type(e).__name__}: {e}")  # fmt: skip
            self._dead_letter(
                DeadLetter(msg.key, msg.value, list(msg.headers or []), reason, detail,
                           msg.topic, msg.partition, msg.offset)
            )  # fmt: skip
            self._handled[tp] = msg.offset + 1
            return
        self.batcher.add(PendingFrame(record, image, msg.topic, msg.partition, msg.offset))
        self._handled[tp] = msg.offset + 1

    def _dead_letter(self, letter: DeadLetter) -> None:
        assert self.outbox is not None
        key, value, headers = letter.encode()
        self.outbox.send(self.cfg.topics.dead_letters, key, value, headers)
        self.metrics.dead_letters.labels(letter.reason).inc()
        log.warning(
            "dead letter %s/%d/%d: %s (%s)", letter.topic, letter.partition, letter.offset, letter.reason, letter.detail
        )

    def _ensure_scorer(self) -> bool:
        if self.scorer is not None:
            return True
        spec = self.indexes.spec
        if spec is None:
            return False
        if self.clock() < self._embedder_retry_at:
            return False
        log.info("building embedder %s", spec.label())
        try:
            embedder = self.embedder_factory(spec)
        except IndexStoreError as e:  # e.g. the index's weights are not on this machine
            self._embedder_error = f"cannot build embedder {spec.label()}: {e}"
            log.error("%s; retrying in 30s", self._embedder_error)
            self._embedder_retry_at = self.clock() + 30.0
            return False
        self.scorer = Scorer(embedder, self.routing, self.worker_id, self.cfg.window)
        self._embedder_error = None
        return True

    def _score_batch(self, batch: list[PendingFrame]) -> None:
        assert self.scorer is not None and self.outbox is not None
        indexes = self.indexes.snapshot()
        self.metrics.batch_size.observe(len(batch))
        try:
            with self.metrics.stage_seconds.labels("score").time():
                records = self.scorer.score(batch, indexes)
        except Exception as e:  # noqa: BLE001 - one bad frame must not take the batch down
            if len(batch) == 1:
                self._dead_letter_frame(batch[0], "scoring-error", f"{type(e).__name__}: {e}")
                return
            log.warning("batch of %d failed (%s); scoring frames one by one", len(batch), e)
            for frame in batch:
                self._score_batch([frame])
            return
        for rec in records:
            key, value = rec.encode()
            self.outbox.send(self.cfg.topics.scores, key, value)
            self.metrics.scored.labels(rec.index_name).inc()
            self.metrics.latency.observe(rec.latency_s)
            if rec.normalized_score is not None:
                self.metrics.score.observe(rec.normalized_score)
            if rec.is_anomaly:
                self.metrics.anomalies.labels(rec.source).inc()

    def _dead_letter_frame(self, frame: PendingFrame, reason: str, detail: str) -> None:
        key, value, headers = frame.record.encode()  # the original message, rebuilt from its record
        self._dead_letter(DeadLetter(key, value, headers, reason, detail, frame.topic, frame.partition, frame.offset))

    # -- delivery and offsets ----------------------------------------------------------
    def _commit_positions(self) -> dict[TopicPartition, int]:
        """Per partition: the oldest frame still buffered, else the next offset after the last handled."""
        positions = dict(self._handled)
        for frame in self.batcher.items:
            tp = TopicPartition(frame.topic, frame.partition)
            positions[tp] = min(positions.get(tp, frame.offset), frame.offset)
        return positions

    def _confirm_and_commit(self, deadline: float) -> None:
        assert self.outbox is not None
        backoff = 0.5
        while True:
            try:
                with self.metrics.stage_seconds.labels("publish").time():
                    self.outbox.confirm(timeout_s=max(1.0, deadline - self.clock()))
                break
            except KafkaError as e:
                self.metrics.reconnects.labels("kafka").inc()
                if self.clock() + backoff > deadline:
                    raise DeliveryFailed(f"outputs not acknowledged: {e}") from e
                log.warning("outputs not acknowledged (%s); resending in %.1fs", e, backoff)
                time.sleep(backoff)
                self.outbox.resend()
                backoff = min(backoff * 2, 10.0)
        positions = self._commit_positions()
        try:
            with self.metrics.stage_seconds.labels("commit").time():
                kafka_io.commit(self.consumer, positions)
        except (CommitFailedError, KafkaError) as e:
            log.warning("commit failed (%s): retried with the next one; a rebalance may score these frames again", e)
            return
        buffered = {TopicPartition(f.topic, f.partition) for f in self.batcher.items}
        self._handled = {tp: off for tp, off in self._handled.items() if tp in buffered}

    # -- rebalance, pause, readiness -------------------------------------------------------
    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish the in-flight frames and commit before the partitions move."""
        if self.consumer is None or self.outbox is None or self._closing:
            return
        if len(self.batcher) and self.scorer is not None and self.indexes.ready():
            while len(self.batcher):
                self._score_batch(self.batcher.take())
        else:  # cannot score them now: commit no further than the oldest dropped frame
            for f in self.batcher.drop(lambda f: TopicPartition(f.topic, f.partition) not in revoked):
                tp = TopicPartition(f.topic, f.partition)
                self._handled[tp] = min(self._handled.get(tp, f.offset), f.offset)
        try:
            self._confirm_and_commit(self.clock() + self.cfg.drain_timeout_s)
        except DeliveryFailed as e:
            log.warning("revoked partitions left uncommitted: %s", e)
        for tp in revoked:
            self._handled.pop(tp, None)
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
        if self._paused and assigned:
            self.consumer.pause(*assigned)

    def _pause(self, reason: str) -> None:
        if self._paused != reason:
            log.warning("%s: pausing consumption", reason)
            self._paused = reason
            self.metrics.paused.set(1)
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(*assignment)

    def _resume(self) -> None:
        if self._paused:
            self._paused = None
            self.metrics.paused.set(0)
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(*assignment)
            log.info("consuming")

    def _update_lag(self) -> None:
        now = self.clock()
        if now - self._last_lag < 5.0 or self.consumer is None:
            return
        self._last_lag = now
        try:
            for partition, behind in kafka_io.lag(self.consumer).items():
                self.metrics.lag.labels(str(partition)).set(behind)
        except KafkaError as e:
            log.debug("lag not updated: %s", e)

    def _alive(self) -> tuple[bool, str]:
        age = self.clock() - self._beat
        limit = max(60.0, self.cfg.drain_timeout_s * 2)
        return (age < limit, f"loop beat {age:.1f}s ago")

    def _ready(self) -> tuple[bool, str]:
        ready_index = self.indexes.ready()
        connected = self.consumer is not None and kafka_io.broker_connected(self.consumer)
        ok = ready_index and connected and self.scorer is not None and not self._undelivered
        self.metrics.ready.set(1 if ok else 0)
        held = ", ".join(f"{n}@{li.meta.version}" for n, li in self.indexes.snapshot().items()) or "none"
        detail = f"indexes: {held}; broker: {'connected' if connected else 'unreachable'}"
        problems = [*self.indexes.problems(), self._embedder_error, self._undelivered]
        return ok, "; ".join([detail, *(p for p in problems if p)])
