"""Kafka at the edge of the alerter: its consumer, where a partition without a commit starts, the dead-letter
producer.

Offsets are committed by the loop, never inside a client callback: kafka-python
3.x runs rebalance listeners on its IO thread, where a blocking call (a commit,
a ListOffsets lookup) fails and wedges the group. The listener only records
what was revoked or assigned; the loop acts on that after ``poll()`` returns.

Start position: the consumer runs with ``auto_offset_reset="none"``, so a
partition without a committed offset raises ``NoOffsetForPartitionError`` from
``poll()`` before any record of it is fetched. ``pin_start`` then seeks it to the
first score published at or after the alerter's start (``offsets_for_times``),
whenever such a partition is assigned: on the first join (however long the join
takes) and on every later reassignment.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Iterable

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from alerting.config import AlertConfig
from alerting.dead_letters import AlertDeadLetter
from alerting.sinks import DeliveryFailed

log = logging.getLogger(__name__)


class Rebalance(ConsumerRebalanceListener):
    """Records revocations and assignments (thread-safe, never blocks); the loop acts on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] = set()
        self.current: frozenset[TopicPartition] = frozenset()

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._lock:
            self._revoked |= set(revoked)
            self._assigned -= set(revoked)
            self.current = self.current - set(revoked)

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._lock:
            self._assigned |= set(assigned)
            self.current = self.current | set(assigned)

    def take(self) -> tuple[set[TopicPartition], set[TopicPartition]]:
        """(revoked, assigned) since the last call."""
        with self._lock:
            revoked, assigned = self._revoked, self._assigned
            self._revoked, self._assigned = set(), set()
        return revoked, assigned


def make_consumer(cfg: AlertConfig, listener: Rebalance) -> KafkaConsumer:
    """The score-topic consumer of the alert group; offsets are committed only by the loop.

    :raises KafkaError: the client cannot be created.
    """
    consumer = KafkaConsumer(
        group_id=cfg.group_id, enable_auto_commit=False,
        auto_offset_reset="earliest" if cfg.from_beginning else "none",
        max_partition_fetch_bytes=1024 * 1024, max_poll_records=500,
        session_timeout_ms=cfg.session_timeout_ms, heartbeat_interval_ms=max(100, cfg.session_timeout_ms // 3),
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        request_timeout_ms=max(30000, cfg.session_timeout_ms + 5000),
        **cfg.kafka.client_kwargs(),
    )  # fmt: skip
    consumer.subscribe([cfg.topics.scores], listener=listener)
    return consumer


def pin_start(
    consumer: KafkaConsumer, tps: Iterable[TopicPartition], started_at: float
) -> dict[TopicPartition, tuple[int, int]]:
    """Seek each partition (none has a committed offset) to its first record stamped at or after
    ``started_at`` (seconds since the epoch), or to its end when there is none yet.

    Returns, per partition, the offset it starts at and the records it skips (published
    before the start, still retained). The end
    is read *before* the time lookup, so a score published between the two is kept.

    :raises KafkaError: the lookups failed (the loop tries again on its next poll).
    """
    tps = list(tps)
    begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    found = consumer.offsets_for_times({tp: int(started_at * 1000) for tp in tps})
    skipped = {}
    for tp in tps:
        hit = found.get(tp)
        # Kafka answers None for "no such record"; some brokers (Tansu) answer offset 0 with timestamp -1.
        offset = hit.offset if hit is not None and hit.offset >= 0 and hit.timestamp >= 0 else ends[tp]
        consumer.seek(tp, offset)
        skipped[tp] = (offset, max(0, offset - begins.get(tp, 0)))
    return skipped


def commit(consumer: KafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    """:raises KafkaError: the commit failed (e.g. CommitFailedError after a rebalance)."""
    if positions:
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in positions.items()})


class DeadLetterProducer:
    """Publishes alert dead letters and waits for the broker's acknowledgement (called from sink lanes)."""

    def __init__(self, cfg: AlertConfig) -> None:
        self.topic = cfg.alert_topics.dead_letters
        self._producer = KafkaProducer(acks="all", retries=5, max_block_ms=10000, request_timeout_ms=10000,
                                       delivery_timeout_ms=30000, **cfg.kafka.client_kwargs())  # fmt: skip

    def __call__(self, letter: AlertDeadLetter) -> None:
        """:raises KafkaError: not acknowledged within 30 s."""
        key, value, headers = letter.encode()
        self._producer.send(self.topic, key=key, value=value, headers=headers).get(timeout=35)

    def close(self) -> None:
        self._producer.close(timeout=10)


class IncidentTopicSink:
    """The incidents topic as a sink: every incident event, keyed by source, acknowledged before it settles."""

    name = "incidents"

    def __init__(self, cfg: AlertConfig) -> None:
        self.topic = cfg.alert_topics.incidents
        self._producer = KafkaProducer(acks="all", retries=5, max_block_ms=10000, request_timeout_ms=10000,
                                       delivery_timeout_ms=30000, **cfg.kafka.client_kwargs())  # fmt: skip

    def __repr__(self) -> str:
        return f"IncidentTopicSink({self.topic})"

    def target(self) -> str:
        return f"topic {self.topic}"

    def send(self, event: Any) -> None:  # noqa: ANN401 - an IncidentEvent
        try:
            value = json.dumps(event.to_dict()).encode()
            self._producer.send(self.topic, key=event.source.encode(), value=value).get(timeout=35)
        except Exception as e:  # noqa: BLE001 - any producer error: retried by the lane
            raise DeliveryFailed(f"topic {self.topic}: {type(e).__name__}: {e}") from None

    def close(self) -> None:
        self._producer.close(timeout=10)


def read_incident_events(cfg: AlertConfig, since: float, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every incident event published at or after ``since`` (epoch seconds), oldest first per source.

    :raises KafkaError: the topic cannot be read.
    """
    consumer = KafkaConsumer(enable_auto_commit=False, **cfg.kafka.client_kwargs())
    try:
        topic = cfg.alert_topics.incidents
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        found = consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        for tp in tps:
            hit = found.get(tp)
            consumer.seek(
                tp, hit.offset if hit is not None and hit.offset >= 0 and hit.timestamp >= 0 else ends[tp]
            )
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=300).values():
                for m in messages:
                    try:
                        event = json.loads(m.value)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("type") == "framewatch.incident":
                        out.append(event)
        return out
    finally:
        consumer.close()
