"""The Kafka client ``cfg.kafka_client`` names, as ``kafka_port.KafkaClient``."""

from __future__ import annotations

from typing import Any, Callable, Optional

from worker.config import WorkerConfig
from worker.kafka_port import Consumer, KafkaClient, Producer, Rebalances


def client_for(cfg: WorkerConfig) -> KafkaClient:
    """kafka-python (the default), or confluent-kafka.

    :raises FramewatchError: confluent is chosen and not installed (the message says how to install it).
    """
    if cfg.kafka_client == "confluent":
        return ConfluentClient(cfg)
    from worker.kafka_python_client import KafkaPythonClient

    return KafkaPythonClient(cfg)


class ConfluentClient:
    """``kafka_port.KafkaClient`` over confluent-kafka. ``make`` stands in for ``confluent_kafka.Consumer``
    and ``Producer`` (tests)."""

    name = "confluent"

    def __init__(self, cfg: WorkerConfig, make: Optional[Callable[[dict], Any]] = None) -> None:
        """:raises FramewatchError: confluent-kafka is not installed."""
        from worker.confluent_client import require

        self.cfg, self._make, self._ck = cfg, make, require()

    def consumer(self, group: str, topic: str, rebalances: Rebalances) -> Consumer:
        from worker.confluent_client import ConfluentConsumer

        return ConfluentConsumer(self.cfg, group, topic, rebalances, make=self._make)

    def producer(self, max_request_bytes: int) -> Producer:
        from worker.confluent_producer import ConfluentProducer

        return ConfluentProducer(self.cfg, max_request_bytes, make=self._make)
