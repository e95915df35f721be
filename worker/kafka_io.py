"""Kafka at the edge of the worker: the consumer, the producer, commits, lag, rebalance notices.

Offsets are committed explicitly (auto-commit off), by the loop, outside any
client callback: kafka-python 3.x runs rebalance listeners on its own IO
thread, where a blocking call (a commit) fails and wedges the group. The
listener here only records what was revoked or assigned; the loop picks that
up after ``poll()`` returns (``Rebalance.take()``).

``make_consumer`` builds kafka-python's consumer, or, with ``kafka_client =
"confluent"``, ``worker.kafka_confluent.ConfluentConsumer``: the same methods
and types over librdkafka (faster on large frames); ``make_producer`` the
outputs' producer of the same client. ``Lookup`` finds a partition's offsets
by time for worker/start_position.py, reading single records through a
kafka-python consumer of its own whichever client consumes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from worker.config import WorkerConfig
from worker.poison import install_lenient_header_keys

log = logging.getLogger(__name__)

# The client's own reset, for an offset out of range (retention passed it, or the broker lost its log): the
# earliest record, so a reset never jumps over what is still there. A partition without a committed offset is
# started by the loop itself, at ``--start-from`` (worker/start_position.py), right after it is assigned.
CLIENT_RESET = "earliest"

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
        auto_offset_reset=CLIENT_RESET,
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


class Lookup:
    """``start_position.OffsetLookup`` for the partitions ``consumer`` (either client) holds.

    Log bounds and the broker's offsets_for_times answer come from ``consumer``; single records are read
    by a kafka-python consumer of its own (assigned, no group), created on first use: the group consumer
    must not be moved around a partition it is about to read. Close it after use.
    """

    def __init__(self, consumer: Any, cfg: WorkerConfig, read_timeout_s: float = 5.0) -> None:
        self.consumer, self.cfg, self.read_timeout_s = consumer, cfg, read_timeout_s
        self._reader: Any = None

    def bounds(self, tp: TopicPartition) -> tuple[int, int]:
        return int(self.consumer.beginning_offsets([tp])[tp]), int(self.consumer.end_offsets([tp])[tp])

    def broker_answer(self, tp: TopicPartition, timestamp_ms: int) -> Optional[int]:
        found = self.consumer.offsets_for_times({tp: timestamp_ms}).get(tp)
        return None if found is None or found.offset < 0 else int(found.offset)

    def first_at(self, tp: TopicPartition, offset: int) -> Optional[tuple[int, int]]:
        """(offset, timestamp ms) of the first record at ``offset`` or after; None if none comes in time."""
        if self._reader is None:
            self._reader = KafkaConsumer(
                group_id=None, enable_auto_commit=False, max_poll_records=1, fetch_max_wait_ms=100,
                max_partition_fetch_bytes=self.cfg.kafka.max_message_bytes,
                fetch_max_bytes=max(self.cfg.kafka.max_message_bytes, 50 * 1024 * 1024),
                **self.cfg.kafka.client_kwargs(),
            )  # fmt: skip
        if self._reader.assignment() != {tp}:
            self._reader.assign([tp])
        self._reader.seek(tp, offset)
        deadline = time.monotonic() + self.read_timeout_s
        while time.monotonic() < deadline:
            for msgs in self._reader.poll(timeout_ms=200, max_records=1).values():
                for msg in msgs:
                    return int(msg.offset), int(msg.timestamp if msg.timestamp is not None else -1)
        return None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


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
