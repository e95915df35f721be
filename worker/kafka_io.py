"""Kafka at the edge of the worker: the consumer, the producer, publishing with acknowledgement.

Offsets are committed explicitly (auto-commit off) and only after every
record derived from the messages before them is acknowledged by the broker.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from worker.config import WorkerConfig

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


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

    Records stay here until acknowledged; ``resend`` sends the unacknowledged
    ones again (a duplicate is possible, a loss is not).
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._inflight: list[tuple[Message, Any]] = []

    def pending(self) -> int:
        return len(self._inflight)

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Optional[Headers] = None) -> None:
        message: Message = (topic, key, value, headers or [])
        self._inflight.append((message, self._send(message)))

    def _send(self, message: Message) -> Any:
        topic, key, value, headers = message
        try:
            return self.producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as e:  # e.g. metadata unavailable while the broker is down
            return e

    def confirm(self, timeout_s: float = 30.0) -> None:
        """Block until every record sent since the last confirm is acknowledged; raise if any failed."""
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as e:
            log.warning("flush: %s", e)
        failed: list[tuple[Message, Any]] = []
        error: Optional[Exception] = None
        for message, future in self._inflight:
            try:
                if isinstance(future, Exception):
                    raise future
                future.get(timeout=timeout_s)
            except KafkaError as e:
                failed.append((message, e))
                error = e
        self._inflight = failed
        if error is not None:
            raise error

    def resend(self) -> None:
        self._inflight = [(message, self._send(message)) for message, _ in self._inflight]


def commit(consumer: KafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    if positions:
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in positions.items()})
