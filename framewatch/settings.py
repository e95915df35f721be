"""Environment variables, read in one place at start-up (flags override them)."""

from __future__ import annotations

import os
from typing import Mapping, Optional

from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics

ENV_VARS = {
    "FRAMEWATCH_KAFKA": "Kafka bootstrap servers, HOST:PORT[,HOST:PORT]",
    "FRAMEWATCH_REDIS": "Redis URL, redis://[:password@]host:port/db (rediss:// for TLS)",
    "FRAMEWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL",
    "FRAMEWATCH_KAFKA_SASL_MECHANISM": "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512",
    "FRAMEWATCH_KAFKA_SASL_USERNAME": "SASL user",
    "FRAMEWATCH_KAFKA_SASL_PASSWORD": "SASL password (never logged)",
    "FRAMEWATCH_KAFKA_SSL_CAFILE": "CA bundle for SSL",
    "FRAMEWATCH_REDIS_CA": "CA bundle for rediss://",
    "FRAMEWATCH_TOPIC_FRAMES": "input topic (default frames)",
    "FRAMEWATCH_TOPIC_SCORES": "output topic (default scores)",
    "FRAMEWATCH_TOPIC_DLQ": "dead-letter topic (default frames.dlq)",
    "FRAMEWATCH_REDIS_PREFIX": "Redis key prefix (default framewatch)",
}


def kafka_settings(bootstrap: Optional[str], env: Mapping[str, str] = os.environ) -> Optional[KafkaSettings]:
    address = bootstrap or env.get("FRAMEWATCH_KAFKA")
    if not address:
        return None
    return KafkaSettings(
        bootstrap=address,
        security_protocol=env.get("FRAMEWATCH_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        sasl_mechanism=env.get("FRAMEWATCH_KAFKA_SASL_MECHANISM") or None,
        sasl_username=env.get("FRAMEWATCH_KAFKA_SASL_USERNAME") or None,
        sasl_password=env.get("FRAMEWATCH_KAFKA_SASL_PASSWORD") or None,
        ssl_cafile=env.get("FRAMEWATCH_KAFKA_SSL_CAFILE") or None,
    )


def redis_settings(url: Optional[str], env: Mapping[str, str] = os.environ) -> Optional[RedisSettings]:
    address = url or env.get("FRAMEWATCH_REDIS")
    if not address:
        return None
    return RedisSettings(
        url=address,
        key_prefix=env.get("FRAMEWATCH_REDIS_PREFIX", "framewatch"),
        ssl_ca_certs=env.get("FRAMEWATCH_REDIS_CA") or None,
    )


def topics(env: Mapping[str, str] = os.environ) -> Topics:
    default = Topics()
    return Topics(
        frames=env.get("FRAMEWATCH_TOPIC_FRAMES", default.frames),
        scores=env.get("FRAMEWATCH_TOPIC_SCORES", default.scores),
        dead_letters=env.get("FRAMEWATCH_TOPIC_DLQ", default.dead_letters),
    )
