"""Kafka at the edge of the worker: the consumer, the producer, commits, lag, rebalance notices.

Offsets are committed explicitly (auto-commit off), by the loop, outside any
client callback: kafka-python 3.x runs rebalance listeners on its own IO
thread, where a blocking call (a commit) fails and wedges the group. The
listener here only records what was revoked or assigned; the loop picks that
up after ``poll()`` returns (``Rebalance.take()``).

``make_consumer`` builds kafka-python's consumer, or, with ``kafka_client =
"confluent"``, ``worker.kafka_confluent.ConfluentConsumer``: the same methods
and types over librdkafka (faster on large frames). The producer is
kafka-python's either way.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from worker.config import WorkerConfig
from worker.poison import install_lenient_header_keys

log = logging.getLogger(__name__)

install_lenient_header_keys()


class Rebalance(ConsumerRebalanceListener):
    """Records revocations and assignments (thread-safe, never blocks); the loop acts on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Any) -> None:
        with self._lock:
            self._revoked |= set(revoked)
            self._assigned -= set(revoked)

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._lock:
            self._assigned |= set(assigned)

    def take(self) -> tuple[set[TopicPartition], set[TopicPartition]]:
        """(revoked, assigned) since the last call."""
        with self._lock:
            revoked, assigned = self._revoked, self._assigned
            self._revoked, self._assigned = set(), set()
        return revoked, assigned


def make_consumer(cfg: WorkerConfig, listener: Rebalance) -> Any:
    """The consumer ``cfg.kafka_client`` names, subscribed to the frames topic, offsets committed only by the loop.

    :raises FramewatchError: confluent is chosen and not installed.
    :raises KafkaError: the client cannot be created.
    """
    if cfg.kafka_client == "confluent":
        from worker.kafka_confluent import ConfluentConsumer

        return ConfluentConsumer(cfg, cfg.topics.frames, listener)
    consumer = KafkaConsumer(
        group_id=cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset=cfg.start_from,
        max_partition_fetch_bytes=cfg.kafka.max_message_bytes,
        fetch_max_bytes=max(cfg.kafka.max_message_bytes, 50 * 1024 * 1024),
        max_poll_records=cfg.max_batch,
        fetch_max_wait_ms=100,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        reconnect_backoff_max_ms=5000,
        request_timeout_ms=max(30000, cfg.session_timeout_ms + 5000),
        **cfg.kafka.client_kwargs(),
    )
    consumer.subscribe([cfg.topics.frames], listener=listener)
    return consumer


def make_producer(cfg: WorkerConfig) -> Any:
    """The producer of the worker's outputs, of the client ``cfg.kafka_client`` names (the outbox's interface)."""
    if cfg.kafka_client == "confluent":
        from worker.kafka_confluent_producer import ConfluentProducer

        return ConfluentProducer(cfg, max_request_bytes=output_limit(cfg) + 64 * 1024)
    return KafkaProducer(
        acks="all",
        linger_ms=5,
        retries=5,
        max_request_size=output_limit(cfg) + 64 * 1024,
        max_block_ms=3000,  # send() blocks at most this long while the broker is unreachable
        request_timeout_ms=10000,
        delivery_timeout_ms=30000,
        reconnect_backoff_max_ms=5000,
        **cfg.kafka.client_kwargs(),
    )


def output_limit(cfg: WorkerConfig) -> int:
    """The largest output message the worker sends (a dead letter over it leaves its payload out)."""
    return cfg.kafka.max_message_bytes


def commit(consumer: Any, positions: dict[TopicPartition, int]) -> None:
    if positions:
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in positions.items()})


def lag(consumer: Any) -> dict[TopicPartition, int]:
    """Messages behind the log end, per assigned partition whose position is known."""
    assignment = list(consumer.assignment())
    if not assignment:
        return {}
    ends = consumer.end_offsets(assignment)
    positions = {tp: consumer.position(tp) for tp in assignment if tp in ends}
    return {tp: max(0, ends[tp] - pos) for tp, pos in positions.items() if pos is not None}


def broker_connected(consumer: Any) -> Optional[bool]:
    """True when the consumer holds a live connection to at least one broker; None while it cannot tell yet
    (the confluent client before its first statistics)."""
    if consumer is None:
        return False
    if hasattr(consumer, "connected"):  # ConfluentConsumer: from librdkafka's statistics
        return consumer.connected()  # type: ignore[no-any-return]
    client = consumer._client  # noqa: SLF001 - kafka-python exposes no public check
    try:
        return any(client.connected(b.node_id) for b in client.cluster.brokers())
    except Exception:  # noqa: BLE001 - treat an internal change as "unknown = not ready"
        return False
