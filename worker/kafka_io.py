"""Kafka at the edge of the worker: the consumer, the producer, publishing with acknowledgement.

Offsets are committed explicitly (auto-commit off) and only after every
record derived from the messages before them is acknowledged by the broker.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from worker.config import WorkerConfig

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class DeliveryFailed(Exception):
    """Outputs could not be acknowledged before the deadline; offsets stay uncommitted."""


class Rebalance(ConsumerRebalanceListener):
    def __init__(self, on_revoked: Callable[[set[TopicPartition]], None], on_assigned: Callable[[set[TopicPartition]], None]) -> None:
        self._revoked, self._assigned = on_revoked, on_assigned

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._revoked(set(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._assigned(set(assigned))


def make_consumer(cfg: WorkerConfig, listener: Rebalance) -> KafkaConsumer:
    consumer = KafkaConsumer(
        group_id=cfg.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=cfg.kafka.max_message_bytes,
        fetch_max_bytes=max(cfg.kafka.max_message_bytes, 50 * 1024 * 1024),
        max_poll_records=cfg.max_batch,
        session_timeout_ms=cfg.session_timeout_ms,
        heartbeat_interval_ms=cfg.heartbeat_interval_ms,
        max_poll_interval_ms=cfg.max_poll_interval_ms,
        reconnect_backoff_max_ms=5000,
        **cfg.kafka.client_kwargs(),
    )
    consumer.subscribe([cfg.topics.frames], listener=listener)
    return consumer


def make_producer(cfg: WorkerConfig) -> KafkaProducer:
    return KafkaProducer(
        acks="all",
        linger_ms=2,
        retries=10,
        max_request_size=cfg.kafka.max_message_bytes + 64 * 1024,
        max_block_ms=10000,
        reconnect_backoff_max_ms=5000,
        **cfg.kafka.client_kwargs(),
    )


Message = tuple[str, Optional[bytes], Optional[bytes], Headers]


class Outbox:
    """Sends records and waits until the broker has acknowledged all of them.

    Records stay here until acknowledged; ``resend`` sends the failed ones
    again (a duplicate is possible, a loss is not). Records the producer is
    still retrying are waited for again, not resent.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._inflight: list[tuple[Message, Any]] = []  # (message, future, or the exception it failed with)

    def pending(self) -> int:
        return len(self._inflight)

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Optional[Headers] = None) -> None:
        message: Message = (topic, key, value, headers or [])
        self._inflight.append((message, self._send(message)))

    def _send(self, message: Message) -> Any:
        topic, key, value, headers = message
        try:
            return self.producer.send(topic, key=key, value=value, headers=headers)
        except Exception as e:  # noqa: BLE001 - e.g. metadata unavailable while the broker is down
            return e

    def confirm(self, timeout_s: float = 30.0) -> None:
        """Block (``timeout_s`` in all) until every record sent is acknowledged; raise KafkaError if any is not."""
        deadline = time.monotonic() + timeout_s
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as e:
            log.warning("flush: %s", e)
        left: list[tuple[Message, Any]] = []
        error: Optional[Exception] = None
        for message, future in self._inflight:
            try:
                if isinstance(future, Exception):
                    raise future
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except Exception as e:  # noqa: BLE001 - any failure keeps the record for another try
                error = e
                done = isinstance(future, Exception) or future.is_done
                left.append((message, e if done else future))
        self._inflight = left
        if error is not None:
            raise error if isinstance(error, KafkaError) else KafkaError(f"{type(error).__name__}: {error}")

    def renew(self, producer: KafkaProducer) -> None:
        """Switch to a new producer and send every unacknowledged record through it.

        For a producer that cannot recover by itself (an idempotent producer
        whose broker lost its state fails every send); duplicates are possible.
        """
        old, self.producer = self.producer, producer
        try:
            old.close(timeout=0)
        except Exception as e:  # noqa: BLE001 - the old one is broken anyway
            log.debug("closing the old producer: %s", e)
        self._inflight = [(message, self._send(message)) for message, _ in self._inflight]

    def resend(self) -> None:
        """Send the failed records again (those still pending in the producer are left to it)."""
        self._inflight = [
            (message, self._send(message) if isinstance(future, Exception) else future)
            for message, future in self._inflight
        ]


def commit(consumer: KafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    if positions:
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in positions.items()})


def lag(consumer: KafkaConsumer) -> dict[int, int]:
    """Messages behind the log end, per assigned partition."""
    assignment = list(consumer.assignment())
    if not assignment:
        return {}
    ends = consumer.end_offsets(assignment)
    return {tp.partition: max(0, ends[tp] - consumer.position(tp)) for tp in assignment}


def broker_connected(consumer: KafkaConsumer) -> bool:
    """True when the consumer holds a live connection to at least one broker."""
    client = consumer._client  # noqa: SLF001 - kafka-python exposes no public check
    try:
        return any(client.connected(b.node_id) for b in client.cluster.brokers())
    except Exception:  # noqa: BLE001 - treat an internal change as "unknown = not ready"
        return False
