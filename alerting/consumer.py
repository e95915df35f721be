"""The Kafka edge of alerting: read the score topic in its own consumer group, decide, deliver, commit.

Offsets are committed after an alert's delivery has been attempted to the end,
so a crash re-reads (and the frame-id de-dup and cooldown absorb) rather than
loses. A new group starts at the end of the topic by default: turning alerting
on must not re-alert every anomaly still retained.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional, Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from alerting.config import AlertConfig
from alerting.delivery import Deliverer, Interrupted
from alerting.metrics import AlertMetrics
from alerting.noise import ALERT, NoiseFilter
from alerting.sinks import Alert, Sink
from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord

log = logging.getLogger(__name__)


class AlertConsumer:
    def __init__(
        self, cfg: AlertConfig, sinks: Sequence[Sink], metrics: AlertMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if not sinks:
            raise ValueError("at least one sink")
        self.cfg, self.sinks, self.metrics = cfg, list(sinks), metrics
        self.noise = NoiseFilter(cfg.noise, clock)
        self.consumer: Optional[KafkaConsumer] = None

    def run(self, stop: threading.Event) -> int:
        """Consume until ``stop`` is set; returns the exit code."""
        deliverer = Deliverer(self.sinks, self.cfg.retry, self.metrics, stop)
        self.consumer = KafkaConsumer(
            group_id=self.cfg.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest" if self.cfg.from_beginning else "latest",
            max_partition_fetch_bytes=1024 * 1024, **self.cfg.kafka.client_kwargs(),
        )  # fmt: skip
        self.consumer.subscribe([self.cfg.topics.scores])
        log.info("alerting on %s as group %s to %s", self.cfg.topics.scores, self.cfg.group_id,
                 ", ".join(repr(s) for s in self.sinks))  # fmt: skip
        try:
            while not stop.is_set():
                batch = self.consumer.poll(timeout_ms=500)
                if not self._handle(batch, deliverer):
                    break
        finally:
            self.consumer.close(autocommit=False)
        return 0

    def _handle(self, batch: dict, deliverer: Deliverer) -> bool:  # type: ignore[type-arg]
        done: dict[TopicPartition, int] = {}
        try:
            for tp, messages in batch.items():
                for msg in messages:
                    self._one(msg.value, deliverer)
                    done[tp] = msg.offset + 1
        except Interrupted:
            return False
        finally:
            if done and self.consumer is not None:
                self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in done.items()})
        return True

    def _one(self, value: bytes, deliverer: Deliverer) -> None:
        try:
            record = ScoreRecord.decode(value)
        except ScoreDecodeError as e:
            self.metrics.undecodable.inc()
            log.warning("skipping an undecodable score record: %s", e)
            return
        decision = self.noise.decide(record)
        self.metrics.records.labels(decision.outcome).inc()
        if decision.outcome == ALERT:
            deliverer.deliver(Alert(record, decision.suppressed, self._link(record)))

    def _link(self, record: ScoreRecord) -> str:
        base = self.cfg.review_url.rstrip("/")
        return f"{base}/#{record.frame_id}" if base else ""
