"""Kafka at the edge of ``framewatch learn``: its consumer on the frames topic, caught-up checks, commits.

Offsets are committed by the loop, never in a rebalance callback (kafka-python
runs those on its IO thread; see alerting/kafka_io.py). A new group starts at
the earliest retained frame, so cameras are learned from the history the topic
already holds. Frame values are fetched by Kafka (a consumer cannot skip them)
and dropped at once: only key, partition, offset and timestamp are used.
"""

from __future__ import annotations

import threading
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from wire.settings import KafkaSettings

CAUGHT_UP_RECORDS = 1000  # a partition within this many records of its end is read to its end


class Rebalance(ConsumerRebalanceListener):
    """Records revocations and assignments (thread-safe, never blocks); the loop acts on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[int] = set()
        self.current: frozenset[int] = frozenset()

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._lock:
            self._revoked |= {tp.partition for tp in revoked}
            self.current = self.current - {tp.partition for tp in revoked}

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._lock:
            self.current = self.current | {tp.partition for tp in assigned}

    def take_revoked(self) -> set[int]:
        with self._lock:
            revoked, self._revoked = self._revoked, set()
        return revoked


def make_consumer(kafka: KafkaSettings, topic: str, group: str, listener: Rebalance,
                  session_timeout_ms: int = 10000) -> KafkaConsumer:  # fmt: skip
    """:raises KafkaError: the client cannot be created."""
    consumer = KafkaConsumer(
        group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=kafka.max_message_bytes, max_poll_records=500,
        session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=max(100, session_timeout_ms // 3),
        request_timeout_ms=max(30000, session_timeout_ms + 5000), **kafka.client_kwargs(),
    )  # fmt: skip
    consumer.subscribe([topic], listener=listener)
    return consumer


def caught_up(consumer: KafkaConsumer, topic: str, partition: int) -> bool:
    """Whether ``partition`` has been read to (near) its end, as the last fetch reported it."""
    tp = TopicPartition(topic, partition)
    try:
        high = consumer.highwater(tp)
        position = consumer.position(tp, timeout_ms=1000) if high is not None else None
    except Exception:  # noqa: BLE001 - not assigned any more, or no answer: not known to be caught up
        return False
    return high is None or position is None or position >= high - CAUGHT_UP_RECORDS


def commit(consumer: KafkaConsumer, topic: str, offsets: dict[int, int]) -> None:
    """:raises KafkaError: the commit failed (e.g. CommitFailedError after a rebalance)."""
    if offsets:
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
