"""The recent anomalies the review page shows: per source, newest first, one entry per frame id.

``RecentAnomalies`` is pure (records in); ``follow`` is the Kafka edge that feeds it
from the score topic, starting ``lookback`` records before the end of each partition.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Optional

from kafka import KafkaConsumer, TopicPartition

from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord
from wire.settings import KafkaSettings

log = logging.getLogger(__name__)


class RecentAnomalies:
    def __init__(self, per_source: int = 20) -> None:
        self.per_source = per_source
        self._by_source: dict[str, OrderedDict[str, ScoreRecord]] = {}
        self._lock = threading.Lock()

    def add(self, record: ScoreRecord) -> None:
        if not record.is_anomaly:
            return
        with self._lock:
            recent = self._by_source.setdefault(record.source, OrderedDict())
            if record.frame_id in recent:
                return  # at-least-once: a re-scored frame keeps its first record
            recent[record.frame_id] = record
            while len(recent) > self.per_source:
                recent.popitem(last=False)

    def by_source(self) -> dict[str, list[ScoreRecord]]:
        """Sources sorted by name; each one's anomalies newest first."""
        with self._lock:
            return {s: list(reversed(r.values())) for s, r in sorted(self._by_source.items())}

    def get(self, frame_id: str) -> Optional[ScoreRecord]:
        with self._lock:
            for recent in self._by_source.values():
                if frame_id in recent:
                    return recent[frame_id]
        return None


def follow(
    settings: KafkaSettings, topic: str, into: RecentAnomalies, stop: threading.Event, lookback: int = 1000
) -> None:
    """Feed ``into`` from ``topic`` until ``stop`` is set (no consumer group: the page is a read-only view)."""
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.client_kwargs())
    try:
        tps: list[TopicPartition] = []
        while not tps and not stop.is_set():
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                stop.wait(1.0)  # the topic does not exist yet
        if not tps:
            return
        consumer.assign(tps)
        begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - lookback))
        while not stop.is_set():
            for msgs in consumer.poll(timeout_ms=300).values():
                for msg in msgs:
                    try:
                        into.add(ScoreRecord.decode(msg.value))
                    except ScoreDecodeError as e:
                        log.debug("skipping an undecodable score record: %s", e)
    finally:
        consumer.close()
