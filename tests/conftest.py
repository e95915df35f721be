"""Shared fixtures. Integration fixtures start a real Kafka-protocol broker (Tansu) and a real
Redis on free loopback ports, once per session."""

from __future__ import annotations

import io
import os
import uuid
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "2")
# New indexes are fit at bf16 on CPUs with it (openvino_runtime.default_precision); the tests compare scores with
# fp32 embedders at fp32's tolerance, so they pin fp32 (the default itself: tests/unit/test_openvino_runtime.py).
os.environ.setdefault("FRAMEWATCH_PRECISION", "fp32")


def png_bytes(seed: int = 0, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> bytes:
    """A small random PNG image."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def redis_server() -> Iterator["object"]:
    from framewatch.services import LocalRedis

    with LocalRedis() as server:
        yield server


@pytest.fixture(scope="session")
def broker() -> Iterator["object"]:
    from framewatch.services import LocalBroker

    with LocalBroker() as b:
        yield b


@pytest.fixture
def redis_url(redis_server) -> str:  # type: ignore[no-untyped-def]
    return redis_server.url


@pytest.fixture
def redis_client(redis_server):  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def kafka_settings(broker):  # type: ignore[no-untyped-def]
    from wire.settings import KafkaSettings

    return KafkaSettings(bootstrap=broker.bootstrap)


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topic names, group ids and Redis prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=["kafka-python", "confluent"])
def client(request) -> str:  # type: ignore[no-untyped-def]
    """The Kafka client a fault test runs its workers with: each such test runs once with each client."""
    if request.param == "confluent":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed (pip install '.[confluent]')")
    return str(request.param)
