"""The worker's group consumer: made with backoff while Kafka is away, and whether a broker answers.

A new consumer connects in the background (kafka-python after bootstrap,
librdkafka after its first statistics): the broker is "connecting" this long
(``CONNECTING_S``), then "unreachable" if no connection came. A failed attempt
is tried again after a backoff that doubles up to ``MAX_BACKOFF_S``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from wire.errors import FramewatchError
from worker.kafka_port import BrokerError, Consumer, KafkaClient, Rebalances

log = logging.getLogger(__name__)

CONNECTING_S = 15.0
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 10.0


class Connection:
    def __init__(self, kafka: KafkaClient, group: str, topic: str, rebalances: Rebalances, where: str,
                 prepare: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic,
                 failed: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        """``prepare`` runs before each attempt (the CLI creates the topics there); ``where`` names the
        brokers in log lines (credentials redacted); ``failed`` counts each failed attempt."""
        self.kafka, self.group, self.topic, self.rebalances = kafka, group, topic, rebalances
        self.where, self.prepare, self.clock, self.failed = where, prepare, clock, failed
        self.consumer: Optional[Consumer] = None
        self.error: Optional[str] = None  # the last failed attempt, until one succeeds
        self._next_at, self._backoff = 0.0, FIRST_BACKOFF_S
        self._made_at = 0.0
        self._seen: Optional[Consumer] = None  # the consumer once a broker answered it

    def attempt(self) -> Optional[float]:
        """Make the consumer if an attempt is due; else the seconds until the next one (None once made).
        :raises BrokerError, OSError, FramewatchError: never: a failure is logged and retried later."""
        if self.consumer is not None:
            return None
        if self.clock() < self._next_at:
            return self._next_at - self.clock()
        try:
            self.prepare()
            self.consumer = self.kafka.consumer(self.group, self.topic, self.rebalances)
        except (FramewatchError, BrokerError, OSError) as e:
            self.error = str(e)
            self.failed()
            log.warning("kafka %s unreachable (%s); retrying in %.1fs", self.where, e, self._backoff)
            self._next_at = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return self._backoff
        self._made_at, self.error, self._backoff = self.clock(), None, FIRST_BACKOFF_S
        log.info("connected to kafka %s, group %s", self.where, self.group)
        return None

    def seen(self) -> None:
        """Called after each poll until a broker has answered this consumer: losing it later reads as
        unreachable. Once seen, nothing is asked (the client's connection check takes its IO lock)."""
        if self.consumer is not None and self._seen is not self.consumer:
            self.state()

    def state(self) -> str:
        """connected | connecting (not connected yet, for at most CONNECTING_S) | unreachable (an attempt
        failed, a connection was lost, or none came in CONNECTING_S)."""
        consumer = self.consumer
        if consumer is None:
            return "unreachable" if self.error else "connecting"
        if consumer.connected():
            self._seen = consumer  # from now on, not connected means unreachable
            return "connected"
        new = self._seen is not consumer and self.clock() - self._made_at < CONNECTING_S
        return "connecting" if new else "unreachable"

    def close(self) -> None:
        """Leave the group (drain has committed what it could)."""
        if self.consumer is None:
            return
        try:
            self.consumer.close()
        except Exception as e:  # noqa: BLE001 - a broker gone at shutdown must not change the exit code
            log.warning("closing the kafka consumer: %s", e)
