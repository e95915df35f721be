"""Helpers for integration tests: topics, producing frames, reading topics, small indexes, workers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from framewatch.admin import ensure_topics
from index_store.embedder import Embedder
from index_store.knn import build_exact
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from wire.records import DeadLetter, FrameRecord, ScoreRecord
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics
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
    threshold: Optional[float] = None, vectors: Optional[np.ndarray] = None,
) -> IndexMeta:  # fmt: skip
    import redis

    if vectors is None:
        vectors = np.random.default_rng(seed).normal(size=(n, spec.dim)).astype(np.float32)
    index = build_exact(vectors, 2)
    meta = IndexMeta(name=name, kind="exact", k=2, dim=index.dim, n_vectors=index.size, spec=spec.to_dict(),
                     threshold=threshold)  # fmt: skip
    repo = IndexRepository(redis.Redis.from_url(redis_url), prefix)
    return repo.publish(meta, index)


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
        drain_timeout_s=20.0,
    )  # fmt: skip
    base.update(kw)
    return WorkerConfig(**base)


@dataclass
class RunningWorker:
    worker: Worker
    stop: threading.Event
    thread: threading.Thread
    exit_code: list[int] = field(default_factory=list)

    def close(self, timeout: float = 60.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


def start_worker(cfg: WorkerConfig) -> RunningWorker:
    worker = Worker(cfg, registry=CollectorRegistry())
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(worker.run(stop)), daemon=True)
    thread.start()
    return RunningWorker(worker, stop, thread, codes)


def worker_process(kafka: KafkaSettings, redis_url: str, prefix: str, topics: Topics, group: str,
                   index: str = "idx", extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:  # fmt: skip
    """``framewatch work`` as a real child process (for SIGKILL / SIGTERM tests)."""
    env = {
        "FRAMEWATCH_TOPIC_FRAMES": topics.frames, "FRAMEWATCH_TOPIC_SCORES": topics.scores,
        "FRAMEWATCH_TOPIC_DLQ": topics.dead_letters, "FRAMEWATCH_REDIS_PREFIX": prefix,
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    import os

    cmd = [sys.executable, "-m", "framewatch.cli", "work", "--kafka", kafka.bootstrap, "--redis", redis_url,
           "--index", index, "--group", group, "--metrics-port", "0", "--max-batch", "8", "--max-wait", "0.2",
           "--session-timeout-ms", "6000", "--heartbeat-ms", "1000", "--threads", "1", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def frames(source: str, n: int, start: int = 0, image: Optional[Callable[[int], bytes]] = None) -> list[FrameRecord]:
    from tests.conftest import png_bytes

    make = image or (lambda i: png_bytes(i))
    return [
        FrameRecord(frame_id=f"{source}-{i}", source=source, sequence=i, capture_time=time.time(), image=make(i),
                    content_type="image/png", origin=f"img/{i:04d}.png")  # fmt: skip
        for i in range(start, start + n)
    ]
