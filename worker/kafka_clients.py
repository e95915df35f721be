"""The Kafka client ``cfg.kafka_client`` names, as ``kafka_port.KafkaClient``."""

from __future__ import annotations

from worker.config import WorkerConfig
from worker.kafka_port import KafkaClient


def client_for(cfg: WorkerConfig) -> KafkaClient:
    """kafka-python (the default), or confluent-kafka.

    :raises FramewatchError: confluent is chosen and not installed (the message says how to install it).
    """
    if cfg.kafka_client == "confluent":
        from worker.confluent_client import ConfluentClient

        return ConfluentClient(cfg)
    from worker.kafka_python_client import KafkaPythonClient

    return KafkaPythonClient(cfg)


def output_limit(cfg: WorkerConfig) -> int:
    """The largest output message the worker sends (a dead letter over it leaves its payload out); the
    producer's request limit leaves room for the rest of the request around it."""
    return cfg.kafka.max_message_bytes
