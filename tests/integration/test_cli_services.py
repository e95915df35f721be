"""The command line against a real broker and Redis: auth failures, malformed index data, ``watch``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from framewatch.services import LocalRedis
from tests.integration.harness import wait_until
from wire.records import ScoreRecord

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def cli(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "framewatch.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("framewatch: error: "), proc.stderr
    return lines[0]


# -- Redis --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def locked_redis():
    """A Redis of its own that requires a password (the shared one stays open for other tests)."""
    import redis

    with LocalRedis() as server:
        redis.Redis.from_url(server.url).config_set("requirepass", "right-pass")
        yield server


def test_wrong_redis_password_is_an_auth_failure_and_stays_secret(locked_redis):
    port = locked_redis.port
    for url, secret in [
        (f"redis://:wrong-pass@127.0.0.1:{port}/0", "wrong-pass"),
        (f"redis://:wr@ng-pass@127.0.0.1:{port}/0", "ng-pass"),  # a raw @ inside the password
        (f"redis://127.0.0.1:{port}/0?password=wrong-pass", "wrong-pass"),
    ]:
        line = one_error_line(cli("index", "list", "--redis", url))
        assert "refused the credentials" in line and "unreachable" not in line, line
        assert secret not in line, line


def test_missing_redis_password_is_an_auth_failure(locked_redis):
    line = one_error_line(cli("index", "list", "--redis", f"redis://127.0.0.1:{locked_redis.port}/0"))
    assert "requires a password" in line


def test_right_redis_password_works(locked_redis):
    proc = cli("index", "list", "--redis", f"redis://:right-pass@127.0.0.1:{locked_redis.port}/0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no indexes"


def test_index_list_with_malformed_data_names_it_in_one_line(redis_url, redis_client, unique):
    prefix = f"fw-{unique}"
    redis_client.sadd(f"{prefix}:indexes", "pointer-abc", "pointer-hash")
    redis_client.set(f"{prefix}:index:pointer-abc:active", "abc")
    redis_client.hset(f"{prefix}:index:pointer-hash:active", "x", "1")  # the wrong Redis type
    proc = cli("index", "list", "--redis", redis_url, env={"FRAMEWATCH_REDIS_PREFIX": prefix})
    line = one_error_line(proc)
    assert "malformed index data" in line and "pointer-abc" in line and "pointer-hash" in line
    assert re.search(r"pointer-abc .*unreadable: .*'abc'", proc.stdout), proc.stdout
    assert "Traceback" not in proc.stderr


# -- watch --------------------------------------------------------------------------------
def record(
    source: str, seq: int, score: float, anomaly: bool = False, window: float | None = None
) -> ScoreRecord:
    now = time.time()
    return ScoreRecord(
        frame_id=f"{source}-{seq}", source=source, sequence=seq, capture_time=now - 0.5, score_time=now,
        score=score, threshold=10.0, is_anomaly=anomaly, index_name="dock", index_version=3,
        backbone="resnet18/IMAGENET1K_V1", latency_s=0.5, origin=f"{source}/{seq:06d}.jpg",
        normalized_score=score / 10.0, window_score=window,
    )  # fmt: skip


def publish(kafka_settings, topic: str, records: list[ScoreRecord]) -> None:  # type: ignore[no-untyped-def]
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_settings.client_kwargs())
    for r in records:
        key, value = r.encode()
        producer.send(topic, key=key, value=value)
    producer.flush(30)
    producer.close()


class Watch:
    """``framewatch watch`` as a child process, its stdout and stderr collected by threads."""

    def __init__(self, *argv: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "framewatch.cli", "watch", *argv], cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(ROOT), **env})  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(
                target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True
            ).start()

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=60)


def test_watch_waits_for_its_topic_then_filters_and_prints_json(kafka_settings, unique):
    topic = f"scores-{unique}"
    env = {"FRAMEWATCH_TOPIC_SCORES": topic}
    watch = Watch(
        "--kafka", kafka_settings.bootstrap, "--json", "--source", "gate-*", "--from-beginning", env=env
    )
    try:
        assert wait_until(lambda: any("does not exist yet" in line for line in watch.err), timeout=60), (
            watch.err
        )
        publish(
            kafka_settings, topic, [record("yard-1", 1, 5.0), record("gate-north", 2, 31812.3, anomaly=True)]
        )
        assert wait_until(lambda: len(watch.out) >= 1, timeout=60), watch.err
    finally:
        code = watch.stop()
    assert code == 0
    printed = [json.loads(line) for line in watch.out]
    assert [p["source"] for p in printed] == ["gate-north"]
    assert printed[0]["score"] == 31812.3 and printed[0]["schema_version"] == 5
    assert not any("Traceback" in line for line in watch.err), watch.err


def test_watch_table_is_readable(kafka_settings, unique):
    topic = f"scores-{unique}"
    long_name = "loading-bay-camera-north-east-17"
    publish(
        kafka_settings,
        topic,
        [record(long_name, 7, 31812.3, anomaly=True, window=12.5), record("cam2", 8, 0.25)],
    )
    watch = Watch(
        "--kafka", kafka_settings.bootstrap, "--from-beginning", env={"FRAMEWATCH_TOPIC_SCORES": topic}
    )
    try:
        assert wait_until(lambda: len(watch.out) >= 3, timeout=60), watch.err
    finally:
        watch.stop()
    header, first, second = watch.out[:3]
    assert header.split()[:3] == ["CAPTURED", "(local", "time)"] and "SOURCE" in header and "WINDOW" in header
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", first), first
    assert long_name in first  # never cut
    assert "31,812" in first and "e+" not in first and "3181.23x" in first and "1.25x" in first
    assert "dock@3" in first and "<< ANOMALY" in first
    assert " 0.25 " in second and "ANOMALY" not in second


def test_watch_piped_into_head_ends_quietly(kafka_settings, unique, tmp_path):
    topic = f"scores-{unique}"
    publish(kafka_settings, topic, [record("cam1", i, float(i)) for i in range(20)])
    cmd = (f"{sys.executable} -m framewatch.cli watch --from-beginning --kafka {kafka_settings.bootstrap} "
           f"2>watch.err | head -n 3; echo \"status=${{PIPESTATUS[0]}}\"; cat watch.err")  # fmt: skip
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "FRAMEWATCH_TOPIC_SCORES": topic})  # fmt: skip
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CAPTURED") and len([x for x in lines if x.startswith("20")]) == 2, proc.stdout
    assert "status=0" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stdout and "BrokenPipe" not in proc.stdout, proc.stdout


def test_watch_survives_forged_and_absurd_score_records(kafka_settings, unique):
    """Anyone who can write the score topic can write anything: watch skips what breaks the contract and goes on."""
    import dataclasses

    from kafka import KafkaProducer

    topic = f"scores-{unique}"
    good = json.loads(record("cam1", 1, 2.0).encode()[1])
    forged = [
        dict(good, capture_time=1e300), dict(good, capture_time=-1e300), dict(good, score_time=1e300),
        dict(good, latency_s=1e308), dict(good, source="cam\x1b[2J\x1b[31mOWNED"), dict(good, score="high"),
        dict(good, sequence=10**400), dict(good, origin="a\r\nb"), dict(good, threshold=1e-320, window_score=1e300),
    ]  # fmt: skip
    producer = KafkaProducer(**kafka_settings.client_kwargs())
    for data in forged:
        producer.send(topic, key=b"cam1", value=json.dumps(data).encode())
    producer.send(topic, key=b"cam1", value=b"\xff not json")
    producer.send(topic, *reversed(dataclasses.replace(record("cam1", 2, 3.0), frame_id="last").encode()))
    producer.flush(30)
    producer.close()
    for argv in ((), ("--json",)):
        watch = Watch("--kafka", kafka_settings.bootstrap, "--from-beginning", *argv, env={"FRAMEWATCH_TOPIC_SCORES": topic})
        try:
            assert wait_until(lambda w=watch: any("last" in x or " 2 " in x for x in w.out), timeout=60), watch.err
            assert watch.proc.poll() is None, watch.err  # still following
        finally:
            code = watch.stop()
        assert code == 0 and not any("Traceback" in line for line in watch.err), watch.err
        text = "".join(watch.out)
        assert "\x1b" not in text and "OWNED" not in text and "\r" not in text, text
        printed = [line for line in watch.out if "cam1" in line]
        assert len(printed) == 3, watch.out  # huge but finite latency and window score are shown; the last record
        assert sum("out of their contract" in line for line in watch.err) == 7, watch.err
        assert sum("not JSON" in line for line in watch.err) == 1, watch.err


def test_work_refuses_routes_to_indexes_of_different_backbones_at_start(kafka_settings, redis_url, unique):
    from index_store.spec import EmbedderSpec
    from tests.integration import harness as h

    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "docks")  # resnet18
    h.publish_index(redis_url, prefix, "yard", spec=EmbedderSpec("resnet34", "random:0", resize=64, crop=64))
    proc = cli("work", "--kafka", kafka_settings.bootstrap, "--redis", redis_url, "--index", "docks",
               "--route", "yard-*=yard", "--metrics-port", "0", env={"FRAMEWATCH_REDIS_PREFIX": prefix}, timeout=60)  # fmt: skip
    line = one_error_line(proc)
    assert "different embedders" in line and "docks: resnet18" in line and "yard: resnet34" in line, line
