"""Topic creation and a Redis client factory for the command line."""

from __future__ import annotations

import logging
import time

import redis
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from index_store.repository import IndexRepository
from wire.errors import FramewatchError
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics

log = logging.getLogger(__name__)


class ConnectionFailed(FramewatchError):
    """Kafka or Redis could not be reached."""


def ensure_topics(settings: KafkaSettings, topics: Topics, partitions: int = 4, timeout_s: float = 30.0) -> None:
    """Create the frames, scores and dead-letter topics if they do not exist."""
    deadline = time.monotonic() + timeout_s
    kwargs = settings.client_kwargs()
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python 3: bound each attempt
        kwargs["bootstrap_timeout_ms"] = int(max(1.0, min(timeout_s, 10.0)) * 1000)
    while True:
        try:
            admin = KafkaAdminClient(**kwargs)
            break
        except KafkaError as e:
            if time.monotonic() > deadline:
                raise ConnectionFailed(f"no Kafka broker at {settings.redacted()}") from e
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [topics.frames, topics.scores, topics.dead_letters]
        new = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in wanted if t not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", [t.name for t in new])
    finally:
        admin.close()


def repository(settings: RedisSettings) -> IndexRepository:
    kwargs = {"ssl_ca_certs": settings.ssl_ca_certs} if settings.ssl_ca_certs else {}
    client = redis.Redis.from_url(settings.url, socket_timeout=10, socket_connect_timeout=5, **kwargs)
    try:
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise ConnectionFailed(f"Redis at {settings.redacted()} is unreachable: {e}") from e
    return IndexRepository(client, settings.key_prefix)
