"""The demo runs to completion, scores anomalies above normal frames, and leaves nothing running."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_short_demo_end_to_end(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "framewatch.cli", "demo", "--short", "--json", str(summary_path), "--timeout", "240"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["frames_scored"] == 32  # 24 normal + 8 anomalous
    assert summary["mean_score_anomalies"] > summary["mean_score_normal"]
    assert out.count("<< ANOMALY") >= 1
    assert "worker metrics: http://127.0.0.1:" in out
    ports = [int(p) for p in re.findall(r"started local \S+ .*?(?:127\.0\.0\.1:)(\d+)", out)]
    assert len(ports) == 2, out[:500]
    assert not any(_port_open(p) for p in ports), "demo left its broker or Redis running"


def test_demo_on_a_shared_broker_and_redis_counts_only_its_own_frames(
    tmp_path, broker, redis_server, redis_client
):
    """Another deployment's scores on `scores` and its index `demo` in Redis: the demo reads
    neither, changes neither, and leaves nothing of its own behind."""
    from kafka import KafkaProducer

    from framewatch.admin import ensure_topics
    from wire.records import ScoreRecord
    from wire.settings import KafkaSettings
    from wire.topics import Topics

    kafka = KafkaSettings(bootstrap=broker.bootstrap)
    ensure_topics(kafka, Topics(), partitions=2)
    producer = KafkaProducer(**kafka.client_kwargs())
    for i in range(32):  # what the demo once took for its own result
        foreign = ScoreRecord(frame_id=f"cam1-other-{i}", source="cam1", sequence=i, capture_time=1.0, score_time=2.0,
                              score=float(i), threshold=10.0, is_anomaly=i > 20, index_name="demo", index_version=7,
                              backbone="resnet18/IMAGENET1K_V1", latency_s=1.0, origin=f"{i:04d}_anomaly.png")  # fmt: skip
        producer.send("scores", key=b"cam1", value=foreign.encode()[1])
    producer.flush(30)
    producer.close()
    redis_client.sadd("framewatch:indexes", "demo")
    redis_client.set("framewatch:index:demo:active", "7")
    def lasting_keys() -> list[bytes]:
        """Keys without an expiry: other tests' worker heartbeats (which expire on their own) left out."""
        return sorted(k for k in redis_client.keys("*") if redis_client.ttl(k) == -1)

    before = lasting_keys()

    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "framewatch.cli", "demo", "--short", "--json", str(summary_path), "--timeout", "240",
         "--kafka", broker.bootstrap, "--redis", redis_server.url],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["frames_scored"] == summary["frames_sent"] == 32
    assert "started local" not in proc.stdout  # it used the services it was given
    assert redis_client.get("framewatch:index:demo:active") == b"7"
    assert lasting_keys() == before  # its own keys are gone, nobody else's touched
