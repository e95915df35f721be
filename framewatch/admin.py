"""Topic creation, the Redis index repository and the index listing, for the command line."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from wire.errors import FramewatchError
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics

if TYPE_CHECKING:
    from index_store.repository import IndexMeta, IndexRepository

log = logging.getLogger(__name__)


class ConnectionFailed(FramewatchError):
    """Kafka or Redis could not be reached."""


class AuthenticationFailed(ConnectionFailed):
    """Kafka or Redis answered but refused the credentials."""


def ensure_topics(
    settings: KafkaSettings, topics: Topics, partitions: int = 4, timeout_s: float = 30.0
) -> None:
    """Create the frames, scores and dead-letter topics if they do not exist."""
    ensure_named_topics(settings, [topics.frames, topics.scores, topics.dead_letters], partitions, timeout_s)


def ensure_named_topics(
    settings: KafkaSettings, wanted: list[str], partitions: int = 4, timeout_s: float = 30.0
) -> None:
    """Create these topics if they do not exist.

    :raises ConnectionFailed: no broker answered within ``timeout_s``.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

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
        new = [
            NewTopic(t, num_partitions=partitions, replication_factor=1) for t in wanted if t not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", [t.name for t in new])
    finally:
        admin.close()


def _is_auth_error(e: Exception) -> bool:
    import redis

    text = str(e).upper()
    return isinstance(e, redis.AuthenticationError) or any(
        m in text for m in ("WRONGPASS", "NOAUTH", "NOPERM", " AUTH ")
    )


def _has_password(url: str) -> bool:
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    return bool(parts.password) or bool(parse_qs(parts.query).get("password"))


def repository(settings: RedisSettings) -> "IndexRepository":
    """A repository on a Redis client that has answered a PING.

    :raises AuthenticationFailed: Redis refused the password (or wants one).
    :raises ConnectionFailed: Redis could not be reached.
    """
    import redis

    from index_store.repository import IndexRepository

    kwargs: dict[str, Any] = {"ssl_ca_certs": settings.ssl_ca_certs} if settings.ssl_ca_certs else {}
    try:
        client = redis.Redis.from_url(settings.url, socket_timeout=10, socket_connect_timeout=5, **kwargs)
        client.ping()
    except (redis.RedisError, ValueError) as e:
        if _is_auth_error(e) and not _has_password(settings.url):
            raise AuthenticationFailed(
                f"Redis at {settings.redacted()} requires a password: give it in the URL, "
                "redis://:PASSWORD@HOST:PORT/DB"
            ) from None
        if _is_auth_error(e):
            raise AuthenticationFailed(
                f"Redis at {settings.redacted()} refused the credentials: {e}"
            ) from None
        if isinstance(e, ValueError):
            raise ConnectionFailed(f"Redis URL {settings.redacted()} is malformed: {e}") from None
        raise ConnectionFailed(f"Redis at {settings.redacted()} is unreachable: {e}") from None
    return IndexRepository(client, settings.key_prefix)


@dataclass(frozen=True)
class IndexRow:
    """One index as ``index list`` shows it; ``problem`` says why its data could not be read."""

    name: str
    versions: list[int]
    active: Optional[int]
    meta: Optional["IndexMeta"]
    problem: str = ""


def list_indexes(repo: "IndexRepository") -> list[IndexRow]:
    """Every index, each read on its own, so one malformed index does not hide the others."""
    import redis

    rows = []
    for name in repo.names():
        versions: list[int] = []
        active: Optional[int] = None
        try:
            versions = repo.versions(name)
            active = repo.active_version(name)
            shown = active if active is not None else (versions[-1] if versions else None)
            meta = repo.meta(name, shown) if shown is not None else None
        except (ValueError, TypeError, KeyError, redis.ResponseError, FramewatchError) as e:
            raw_active = _raw_get(repo, repo.keys.active(name))
            rows.append(
                IndexRow(name, versions, None, None, f"{type(e).__name__}: {e} (active pointer {raw_active})")
            )
            continue
        rows.append(IndexRow(name, versions, active, meta))
    return rows


def _raw_get(repo: "IndexRepository", key: str) -> str:
    import redis

    try:
        value = repo.raw_value(key)
    except redis.ResponseError as e:  # the key holds another type
        return f"is not a string: {e}"
    return repr(value.decode("utf-8", "replace")) if value is not None else "unset"
