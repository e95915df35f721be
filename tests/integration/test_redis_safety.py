"""Issue 18, findings 10 and 11: a Redis that may evict index keys, a publish Redis refuses, an index gone.

Each test has a Redis of its own (its policy is changed, its data flushed).
``index fit`` is run as an operator runs it; the worker is asked over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from framewatch.services import LocalRedis
from tests.conftest import png_bytes
from tests.integration import harness as h

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ids = h.ids


@pytest.fixture
def own_redis():  # type: ignore[no-untyped-def]
    with LocalRedis() as server:
        client = redis.Redis.from_url(server.url)
        yield server, client
        client.close()


def fit(redis_url: str, images: Path, prefix: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "framewatch.cli", "index", "fit", str(images), "--name", "idx", "--redis", redis_url,
           "--backbone", "resnet18", "--weights", "random:0", "--crop", "64", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "FRAMEWATCH_REDIS_PREFIX": prefix}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for i in range(4):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(i))
    return tmp_path


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("framewatch: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_index_fit_refuses_a_redis_that_evicts_any_key_and_writes_nothing(own_redis, images, unique):
    server, client = own_redis
    client.config_set("maxmemory-policy", "allkeys-lru")
    line = one_error_line(fit(server.url, images, f"t-{unique}"))
    assert "maxmemory-policy is allkeys-lru" in line and "noeviction" in line, line
    assert client.dbsize() == 0, client.keys()


def test_a_publish_redis_refuses_is_one_line_exit_2_and_nothing_active(own_redis, images, unique):
    """noeviction at maxmemory: the write is refused whole; the operator gets one line, not a Redis traceback."""
    server, client = own_redis
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # below what Redis already uses: every write is refused
    line = one_error_line(fit(server.url, images, f"t-{unique}"))
    assert "not published" in line and "maxmemory" in line, line
    assert client.dbsize() == 0, client.keys()


get = h.http_get


def test_a_worker_warns_of_an_evicting_redis_says_when_its_index_is_gone_and_keeps_scoring(
    kafka_settings, own_redis, unique
):
    server, client = own_redis
    topics, prefix = h.topics_for(unique, kafka_settings, partitions=2), f"t-{unique}"
    h.publish_index(server.url, prefix, "idx")
    client.config_set("maxmemory-policy", "allkeys-lru")
    running = h.start_worker(h.worker_config(kafka_settings, server.url, prefix, topics, unique))
    try:
        before = h.frames("camA", 4)
        h.produce_frames(kafka_settings, topics.frames, before)
        assert h.wait_for_ids(kafka_settings, topics, ids(before), 90)
        port = running.worker.health.port
        status, body = get(port, "/readyz")
        assert status == 200 and "maxmemory-policy is allkeys-lru" in body, body
        assert h.metric_value(get(port, "/metrics")[1], "framewatch_redis_eviction_unsafe") == 1

        client.flushall()  # the data is lost; the worker holds its copy
        missing = 'framewatch_index_missing{index="idx"}'
        assert h.wait_until(lambda: h.metric_value(get(port, "/metrics")[1], missing) == 1, 30)
        status, body = get(port, "/readyz")
        assert status == 200 and "index idx@1 is gone from Redis" in body and "still scoring" in body, body
        after = h.frames("camA", 4, start=100)
        h.produce_frames(kafka_settings, topics.frames, after)
        assert h.wait_for_ids(kafka_settings, topics, ids(after), 60)
        h.assert_nothing_lost(kafka_settings, topics, ids(before) | ids(after))

        client.config_set("maxmemory-policy", "noeviction")
        h.publish_index(server.url, prefix, "idx", seed=3)  # published again: whole again
        assert h.wait_until(lambda: h.metric_value(get(port, "/metrics")[1], missing) == 0, 30)
        assert h.wait_until(lambda: "gone from Redis" not in get(port, "/readyz")[1], 10)
        assert "maxmemory-policy" not in get(port, "/readyz")[1]
    finally:
        running.close()
    assert running.exit_code == [0]
