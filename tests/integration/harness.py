"""Helpers for integration tests: topics, producing frames, reading topics, small indexes, workers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from framewatch.admin import ensure_topics
from index_store.embedder import Embedder
from index_store.keys import Keys
from index_store.knn import build_exact
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from wire.records import DeadLetter, FrameRecord, ScoreRecord
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import H_FRAME_ID, Topics
from worker.config import WorkerConfig
from worker.loop import Worker

# Small inputs keep random-init ResNet-18 fast on 2 CPU cores; the code path is the real one.
SMALL_SPEC = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)


def topics_for(unique: str, settings: KafkaSettings, partitions: int = 2) -> Topics:
    topics = Topics(frames=f"frames-{unique}", scores=f"scores-{unique}", dead_letters=f"dlq-{unique}")
    ensure_topics(settings, topics, partitions=partitions)
    return topics


def publish_index(
    redis_url: str, prefix: str, name: str, spec: EmbedderSpec = SMALL_SPEC, n: int = 20, seed: int = 0,
    threshold: Optional[float] = None, vectors: Optional[np.ndarray] = None, activate: bool = True,
    candidate: bool = False,
) -> IndexMeta:  # fmt: skip
    import redis

    if vectors is None:
        vectors = np.random.default_rng(seed).normal(size=(n, spec.dim)).astype(np.float32)
    index = build_exact(vectors, 2)
    meta = IndexMeta(name=name, kind="exact", k=2, dim=index.dim, n_vectors=index.size, spec=spec.to_dict(),
                     threshold=threshold)  # fmt: skip
    repo = IndexRepository(redis.Redis.from_url(redis_url), prefix)
    return repo.publish(meta, index, activate=activate, candidate=candidate)


def write_raw_version(redis_url: str, prefix: str, name: str, meta: dict[str, Any], vectors: bytes,
                      activate: bool = True) -> int:  # fmt: skip
    """Write an index version straight into Redis, as a buggy tool or a newer framewatch might, bypassing
    publish()'s checks. Returns the version number."""
    import hashlib
    import json

    import redis

    keys = Keys(prefix)
    client = redis.Redis.from_url(redis_url)
    version = int(client.incr(keys.counter(name)))
    record = {"name": name, "version": version, "sha256": hashlib.sha256(vectors).hexdigest(), "n_chunks": 1,
              "created_at": time.time(), **meta}  # fmt: skip
    client.set(keys.chunk(name, version, 0), vectors)
    client.set(keys.meta(name, version), json.dumps(record))
    client.zadd(keys.versions(name), {str(version): time.time()})
    client.sadd(keys.names, name)
    if activate:
        client.set(keys.active(name), version)
        client.publish(keys.events, json.dumps({"name": name, "version": version}))
    client.close()
    return version


def raw_meta(spec: EmbedderSpec = SMALL_SPEC, n: int = 20, **overrides: Any) -> dict[str, Any]:
    """Metadata fields of a plausible exact index of ``n`` vectors, with ``overrides``."""
    dim = overrides.pop("dim") if "dim" in overrides else spec.dim  # a spec this version refuses has no dim
    return {"kind": "exact", "k": 2, "dim": dim, "n_vectors": n, "spec": spec.to_dict(), **overrides}


def fit_index_from_images(redis_url: str, prefix: str, name: str, images: list[Any], spec: EmbedderSpec = SMALL_SPEC) -> IndexMeta:
    """An index of the embeddings of these PIL images."""
    emb = Embedder(spec).embed(images)
    return publish_index(redis_url, prefix, name, spec, vectors=emb)


def produce_frames(settings: KafkaSettings, topic: str, frames: list[FrameRecord]) -> None:
    producer = KafkaProducer(acks="all", max_request_size=settings.max_message_bytes, **settings.client_kwargs())
    for f in frames:
        key, value, headers = f.encode()
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()


def produce_raw(settings: KafkaSettings, topic: str, key: Optional[bytes], value: Optional[bytes], headers: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(acks="all", max_request_size=settings.max_message_bytes, **settings.client_kwargs())
    producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
    producer.close()


def read_topic(settings: KafkaSettings, topic: str) -> list[Any]:
    """Every message currently in ``topic`` (all partitions, from the beginning)."""
    consumer = KafkaConsumer(enable_auto_commit=False, max_partition_fetch_bytes=settings.max_message_bytes,
                             **settings.client_kwargs())  # fmt: skip
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for msgs in consumer.poll(timeout_ms=300).values():
                out.extend(msgs)
        return out
    finally:
        consumer.close()


def scores(settings: KafkaSettings, topic: str) -> list[ScoreRecord]:
    return [ScoreRecord.decode(m.value) for m in read_topic(settings, topic)]


def dead_letters(settings: KafkaSettings, topic: str) -> list[DeadLetter]:
    return [DeadLetter.decode(m.key, m.value, m.headers) for m in read_topic(settings, topic)]


def http_get(port: int, path: str) -> tuple[int, str]:
    """HTTP status and body of a worker's /healthz, /readyz or /metrics on loopback."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def worker_config(kafka: KafkaSettings, redis_url: str, prefix: str, topics: Topics, unique: str, **kw: Any) -> WorkerConfig:
    base: dict[str, Any] = dict(
        kafka=kafka, redis=RedisSettings(url=redis_url, key_prefix=prefix), index="idx", topics=topics,
        group_id=f"g-{unique}", max_batch=8, max_wait_s=0.2, metrics_host="127.0.0.1", metrics_port=0,
        session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=30000, index_poll_s=1.0,
        drain_timeout_s=20.0, start_from="earliest",  # tests produce before the group joins
    )  # fmt: skip
    base.update(kw)
    return WorkerConfig(**base)


@dataclass
class RunningWorker:
    worker: Worker
    stop: threading.Event
    thread: threading.Thread
    exit_code: list[int] = field(default_factory=list)
    crash: list[str] = field(default_factory=list)  # the traceback, if run() raised

    def alive(self) -> bool:
        assert not self.crash, self.crash[0]
        return self.thread.is_alive()

    def close(self, timeout: float = 60.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        assert not self.crash, self.crash[0]


def ids(frames: list[FrameRecord]) -> set[str]:
    return {f.frame_id for f in frames}


def interleave(*sources: list[FrameRecord]) -> list[FrameRecord]:
    """Round-robin over several sources' frame lists (frames flow from all cameras at once)."""
    out: list[FrameRecord] = []
    for group in zip(*sources):
        out.extend(group)
    return out


def readyz(running: RunningWorker) -> tuple[int, str]:
    """GET /readyz of an in-process worker, as an orchestrator would: (status, body); (0, "") before it serves."""
    health = running.worker.health
    if health is None:
        return 0, ""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health.port}/readyz", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except urllib.error.URLError:
        return 0, ""


def wait_assigned(running: RunningWorker, timeout: float = 60.0) -> bool:
    """Wait until an in-process worker has joined its group and holds partitions."""
    return wait_until(lambda: running.worker.status().assigned, timeout, 0.2)


def start_worker(cfg: WorkerConfig) -> RunningWorker:
    worker = Worker(cfg, registry=CollectorRegistry())
    stop = threading.Event()
    running = RunningWorker(worker, stop, threading.Thread(daemon=True))

    def run() -> None:
        try:
            running.exit_code.append(worker.run(stop))
        except BaseException:
            running.crash.append(traceback.format_exc())
            raise

    running.thread = threading.Thread(target=run, daemon=True)
    running.thread.start()
    return running


class WorkerProcess:
    """``framewatch work`` as a real child process (for SIGKILL / SIGTERM tests).

    A thread reads its combined output, so the pipe never fills and blocks the worker.
    """

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return "\n".join(self.lines)

    def port(self, timeout: float = 60.0) -> int:
        """The metrics/health port the worker picked (it logs it at start)."""
        return self.address(timeout)[1]

    def address(self, timeout: float = 60.0) -> tuple[str, int]:
        """The (host, port) the worker's /metrics listens on, as it logs it at start."""
        found: list[tuple[str, int]] = []

        def logged() -> bool:
            for line in list(self.lines):
                m = re.search(r"metrics on http://(.+):(\d+)/metrics", line)
                if m:
                    found.append((m.group(1), int(m.group(2))))
                    return True
            return not self.alive()

        wait_until(logged, timeout, every=0.1)
        if not found:
            raise AssertionError(f"worker did not report its port:\n{self.output()}")
        return found[0]

    def get(self, path: str) -> tuple[int, str]:
        """HTTP status and body of /metrics, /healthz or /readyz."""
        host, port = self.address()
        host = "127.0.0.1" if host == "0.0.0.0" else "[::1]" if host == "[::]" else host
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name: str) -> float:
        """The value of one sample line of /metrics, e.g. ``framewatch_reconnects_total{dependency="redis"}``."""
        return metric_value(self.get("/metrics")[1], name)

    def assigned(self) -> list[int]:
        """The partitions of the latest assignment the worker logged."""
        found = [line for line in self.lines if "partitions assigned:" in line]
        return [int(p) for p in re.findall(r"\d+", found[-1].split("partitions assigned:")[1])] if found else []

    def rss_kib(self) -> int:
        """Resident set size (VmRSS) of the worker process, in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no leaving the group."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._reader.join(5)


def worker_process(kafka: KafkaSettings, redis_url: str, prefix: str, topics: Topics, group: str,
                   index: str = "idx", extra: tuple[str, ...] = (), env_extra: Optional[dict[str, str]] = None,
                   client: str = "kafka-python") -> WorkerProcess:  # fmt: skip
    """Start ``framewatch work`` as a child process in consumer group ``group`` (``extra`` flags win), consuming
    and sending its outputs through ``client`` (kafka-python or confluent)."""
    env = {
        "FRAMEWATCH_TOPIC_FRAMES": topics.frames, "FRAMEWATCH_TOPIC_SCORES": topics.scores,
        "FRAMEWATCH_TOPIC_DLQ": topics.dead_letters, "FRAMEWATCH_REDIS_PREFIX": prefix,
        "OMP_NUM_THREADS": "1", **(env_extra or {}),
    }  # fmt: skip
    cmd = [sys.executable, "-m", "framewatch.cli", "work", "--kafka", kafka.bootstrap, "--redis", redis_url,
           "--index", index, "--group", group, "--metrics-port", "0", "--max-batch", "8", "--max-wait", "0.2",
           "--session-timeout-ms", "6000", "--heartbeat-ms", "1000", "--threads", "1", "--start-from", "earliest", "--kafka-client", client, *extra]  # fmt: skip
    return WorkerProcess(cmd, {**os.environ, **env})


def metric_value(body: str, sample: str) -> float:
    """The value of ``sample`` (name plus labels, exactly as exposed) in a /metrics body; 0 if absent."""
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


class Feeder:
    """Produces frames from a background thread at about ``rate`` frames a second, so they flow during a fault."""

    def __init__(self, settings: KafkaSettings, topic: str, frames: list[FrameRecord], rate: float = 10.0,
                 hold_at: Optional[int] = None) -> None:  # fmt: skip
        """``hold_at``: before sending that frame, wait for ``release()`` (a fault lands mid-stream however
        long the set-up before it took)."""
        self.settings, self.topic, self.frames, self.rate, self.hold_at = settings, topic, frames, rate, hold_at
        self.sent = 0
        self.error: Optional[BaseException] = None
        self._released = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def release(self) -> None:
        self._released.set()

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = KafkaProducer(acks="all", **self.settings.client_kwargs())
        try:
            for i, f in enumerate(self.frames):
                if i == self.hold_at and not self._released.wait(120):
                    raise TimeoutError(f"feeder held at frame {i}: never released")
                key, value, headers = f.encode()
                producer.send(self.topic, key=key, value=value, headers=headers).get(timeout=30)
                self.sent += 1
                time.sleep(1.0 / self.rate)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e
        finally:
            producer.close()

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "feeder did not finish"
        assert self.error is None, f"feeder failed: {self.error!r}"


def letter_id(letter: DeadLetter) -> str:
    """The frame id a dead letter stands for: its frame-id header, else topic/partition/offset as the worker derives it."""
    try:
        return letter.header(H_FRAME_ID) or f"{letter.topic}/{letter.partition}/{letter.offset}"
    except UnicodeDecodeError:
        return f"{letter.topic}/{letter.partition}/{letter.offset}"


def outcome(settings: KafkaSettings, topics: Topics) -> tuple[dict[str, list[ScoreRecord]], dict[str, list[DeadLetter]]]:
    """Score records and dead letters so far, each grouped by frame id."""
    by_score: dict[str, list[ScoreRecord]] = {}
    for r in scores(settings, topics.scores):
        by_score.setdefault(r.frame_id, []).append(r)
    by_letter: dict[str, list[DeadLetter]] = {}
    for d in dead_letters(settings, topics.dead_letters):
        by_letter.setdefault(letter_id(d), []).append(d)
    return by_score, by_letter


def wait_for_ids(settings: KafkaSettings, topics: Topics, ids: set[str], timeout: float = 90.0) -> bool:
    """Wait until every id in ``ids`` has a score record or a dead letter."""

    def done() -> bool:
        scored, dead = outcome(settings, topics)
        return ids <= set(scored) | set(dead)

    return wait_until(done, timeout, every=1.0)


def assert_nothing_lost(
    settings: KafkaSettings, topics: Topics, produced: set[str], dead: set[str] = frozenset()  # type: ignore[assignment]
) -> tuple[dict[str, list[ScoreRecord]], dict[str, list[DeadLetter]]]:
    """Every produced id is scored or dead-lettered at least once; exactly ``dead`` are dead letters."""
    scored, letters = outcome(settings, topics)
    missing = produced - set(scored) - set(letters)
    assert not missing, f"{len(missing)} frames lost: {sorted(missing)[:10]}"
    assert set(letters) == set(dead), f"dead letters {sorted(letters)} != expected {sorted(dead)}"
    assert not (set(scored) & set(dead)), f"dead-lettered frames also scored: {sorted(set(scored) & set(dead))}"
    assert set(scored) | set(letters) <= produced, "records for frames never produced"
    return scored, letters


def produce_messages(settings: KafkaSettings, topic: str, messages: list[tuple[Optional[bytes], Optional[bytes], list[tuple[str, bytes]]]]) -> list[tuple[int, int]]:
    """Send raw (key, value, headers) messages in order; return each one's (partition, offset)."""
    producer = KafkaProducer(acks="all", max_request_size=settings.max_message_bytes, **settings.client_kwargs())
    try:
        out = []
        for key, value, headers in messages:
            meta = producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
            out.append((meta.partition, meta.offset))
        return out
    finally:
        producer.close()


def sources_covering(partitions: int, prefix: str = "cam") -> list[str]:
    """One source name per partition, by the producer's default key hash (murmur2), so every partition gets frames."""
    from kafka.partitioner.default import murmur2

    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        name = f"{prefix}{i}"
        found.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, name)
        i += 1
    return [found[p] for p in range(partitions)]


def frames(source: str, n: int, start: int = 0, image: Optional[Callable[[int], bytes]] = None) -> list[FrameRecord]:
    from tests.conftest import png_bytes

    make = image or (lambda i: png_bytes(i))
    return [
        FrameRecord(frame_id=f"{source}-{i}", source=source, sequence=i, capture_time=time.time(), image=make(i),
                    content_type="image/png", origin=f"img/{i:04d}.png")  # fmt: skip
        for i in range(start, start + n)
    ]


def restart_resumes_from_commits(
    cfg: WorkerConfig, kafka: KafkaSettings, topics: Topics, later: list[FrameRecord], produced: set[str],
    poison_id: str,
) -> None:
    """A worker restarted in the same group starts from the committed offsets: the ``later`` frames are
    scored, the poison record is not read again, and nothing is scored twice."""
    again = start_worker(cfg)
    try:
        assert wait_assigned(again)
        produce_frames(kafka, topics.frames, later)
        produced = produced | ids(later)
        assert wait_for_ids(kafka, topics, produced, 60)
        scored, letters = assert_nothing_lost(kafka, topics, produced, {poison_id})
        assert len(letters[poison_id]) == 1, "the poison record was read again"
        assert all(len(recs) == 1 for recs in scored.values()), "frames scored again after the restart"
    finally:
        again.close()
    assert again.exit_code == [0]
