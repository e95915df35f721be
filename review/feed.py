"""The recent anomalies the review page shows: per source, newest first, one entry per frame id.

``RecentAnomalies`` is pure (records in); ``follow`` is the Kafka edge that feeds it
from the score topic, and ``follow_incidents`` the one that feeds the incidents
(review/incidents.py) from the alerter's topic, each starting ``lookback``
records before the end of each partition.

Anyone who can write the score topic can forge a record, so a record is kept only
if its coordinates point at the configured frames topic and its fields have the
types the page renders (``refusal`` says why not); the rest are logged and skipped.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from typing import Callable, Optional

from kafka import KafkaConsumer, TopicPartition

from review.incidents import Incidents
from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord
from wire.settings import KafkaSettings

log = logging.getLogger(__name__)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def refusal(record: ScoreRecord, frames_topic: str) -> str:
    """Why the page will not show ``record`` ("" when it will)."""
    if record.frame_topic != frames_topic:
        return f"its frame is on {record.frame_topic!r}, not on the frames topic {frames_topic!r}"
    texts = (record.frame_id, record.source, record.index_name, record.origin)
    if not all(isinstance(t, str) for t in texts) or not record.frame_id or len(record.frame_id) > 512:
        return "its ids are not short strings"
    ints = (record.frame_partition, record.frame_offset, record.index_version)
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ints):
        return "its coordinates or version are not whole numbers"
    if not _number(record.score) or not (record.threshold is None or _number(record.threshold)):
        return "its score or threshold is not a finite number"
    if record.neighbors is not None and not (
        isinstance(record.neighbors, list) and all(isinstance(n, str) for n in record.neighbors)
    ):
        return "its neighbours are not a list of strings"
    return ""


class RecentAnomalies:
    def __init__(self, per_source: int = 20, frames_topic: str = "frames") -> None:
        self.per_source, self.frames_topic = per_source, frames_topic
        self._by_source: dict[str, OrderedDict[str, ScoreRecord]] = {}
        self._lock = threading.Lock()

    def add(self, record: ScoreRecord) -> None:
        if record.is_anomaly is not True:
            return
        why = refusal(record, self.frames_topic)
        if why:
            log.warning("ignoring the score record for frame %r: %s", str(record.frame_id)[:80], why)
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
    settings: KafkaSettings,
    topic: str,
    into: RecentAnomalies,
    stop: threading.Event,
    lookback: int = 1000,
    incidents: Optional[Incidents] = None,
) -> None:
    """Feed ``into`` (and ``incidents``, for their peaks' maps) from the score topic until ``stop`` is set."""

    def handle(value: bytes) -> None:
        try:
            record = ScoreRecord.decode(value)
        except ScoreDecodeError as e:
            log.debug("skipping an undecodable score record: %s", e)
            return
        into.add(record)
        if incidents is not None and record.is_anomaly is True and not refusal(record, into.frames_topic):
            incidents.see(record)

    tail(settings, topic, handle, stop, lookback)


def follow_incidents(
    settings: KafkaSettings, topic: str, into: Incidents, stop: threading.Event, lookback: int = 1000
) -> None:
    """Feed ``into`` from the incidents topic (``framewatch alert``'s events) until ``stop`` is set."""

    def handle(value: bytes) -> None:
        try:
            event = json.loads(value)
        except (ValueError, TypeError):
            log.debug("skipping an incident event that is not JSON")
            return
        into.add(event)

    tail(settings, topic, handle, stop, lookback)


def tail(
    settings: KafkaSettings, topic: str, handle: Callable[[bytes], None], stop: threading.Event, lookback: int
) -> None:
    """Pass each message value of ``topic`` to ``handle``, from ``lookback`` records before the end of each
    partition, until ``stop`` is set (no consumer group: the page is a read-only view)."""
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
                    if msg.value is not None:
                        handle(msg.value)
    finally:
        consumer.close()
