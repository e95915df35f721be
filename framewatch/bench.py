"""What ``framewatch bench`` measures, each on the same frames: one function per figure.

- decode: the worker's own ``prepare`` (decode + preprocess) on its decode pool;
- extractor: decode and embed, overlapped as the worker overlaps them, no Kafka;
- pipeline: a whole worker, frames topic -> score topic, until every score is acknowledged;
- null pipeline: the same worker with a no-op extractor (no decode, no embed);
- raw consume: the worker's consumer settings reading the frames topic, nothing else
  (with kafka-python, and with confluent-kafka when it is installed);
- latency: frames offered at a fixed rate, capture time -> score record read back.

Throughputs are steady state: the clock starts at the first frame done, so
joining a consumer group or warming a model is not counted.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image
from prometheus_client import CollectorRegistry

from wire.records import FrameRecord
from wire.settings import KafkaSettings
from wire.topics import Topics
from worker.admission import DecodePool
from worker.config import WorkerConfig
from worker.extract import Extractor

FRAME_SIZE = (1280, 720)
# How often the pipeline figures read the worker's counter. Reading it collects the worker's whole
# registry under the GIL: every 10 ms that took about a tenth of the null pipeline's interpreter time.
POLL_S = 0.05


def photo() -> Image.Image:
    """A real photograph: scikit-image's coffee cup if installed, else scikit-learn's sample image."""
    try:
        from skimage import data

        return Image.fromarray(data.coffee())
    except ImportError:
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image("china.jpg"))


def synthetic_jpegs(
    distinct: int, size: tuple[int, int] = FRAME_SIZE, quality: int = 90, seed: int = 0
) -> list[bytes]:
    """``distinct`` JPEG frames of ``size`` from one photo: each shifted a little, with sensor-like noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    big = np.asarray(photo().convert("RGB").resize((w + 64, h + 36), Image.BILINEAR), dtype=np.float32)
    out = []
    for i in range(distinct):
        x, y = (i * 7) % 64, (i * 5) % 36
        frame = big[y : y + h, x : x + w] + rng.normal(0.0, 4.0, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def records(
    images: Sequence[bytes], n: int, source: str = "bench", content_type: str = "image/jpeg"
) -> list[FrameRecord]:
    return [
        FrameRecord(
            f"{source}-{i}", source, i, time.time(), images[i % len(images)], content_type, f"bench#{i}"
        )
        for i in range(n)
    ]


def decode_fps(extractor: Extractor, frames: Sequence[FrameRecord]) -> float:
    pool = DecodePool()
    try:
        pool.submit(extractor.prepare, frames[0]).result()  # warm
        t0 = time.perf_counter()
        for f in [pool.submit(extractor.prepare, r) for r in frames]:
            f.result()
        return len(frames) / (time.perf_counter() - t0)
    finally:
        pool.close()


def extractor_fps(extractor: Extractor, frames: Sequence[FrameRecord], batch: int) -> float:
    """Decode batch n+1 on the pool while batch n is embedded: the worker's stages without Kafka."""
    pool = DecodePool()
    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    try:
        extractor.embed([extractor.prepare(r) for r in batches[0]])  # warm the model
        t0 = time.perf_counter()
        pending = [pool.submit(extractor.prepare, r) for r in batches[0]]
        for i in range(len(batches)):
            ahead = (
                [pool.submit(extractor.prepare, r) for r in batches[i + 1]] if i + 1 < len(batches) else []
            )
            extractor.embed([f.result() for f in pending])
            pending = ahead
        return len(frames) / (time.perf_counter() - t0)
    finally:
        pool.close()


def produce(kafka: KafkaSettings, topic: str, frames: Sequence[FrameRecord], rate: float = 0.0,
            stamp: bool = False) -> None:  # fmt: skip
    """Publish ``frames`` (at ``rate`` per second if > 0; ``stamp``: capture time = when sent)."""
    from producer.publisher import kafka_producer

    producer = kafka_producer(kafka)
    t0 = time.perf_counter()
    try:
        for i, rec in enumerate(frames):
            if rate > 0:
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if stamp:
                rec = replace(rec, capture_time=time.time())
            key, value, headers = rec.encode()
            producer.send(topic, value=value, key=key, headers=headers)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


def raw_consume_fps(cfg: WorkerConfig, n: int, timeout_s: float = 120.0) -> float:
    """The worker's consumer (same client, same settings, a fresh group) reading ``n`` frames, nothing else:
    each poll takes all the client holds, as the worker's does (worker/intake.py)."""
    from worker.kafka_clients import client_for
    from worker.kafka_port import Rebalances

    consumer = client_for(cfg).consumer(cfg.group_id, cfg.topics.frames, Rebalances())
    got, first, t_first, deadline = 0, 0, 0.0, time.monotonic() + timeout_s
    try:
        while got < n and time.monotonic() < deadline:
            got += len(consumer.poll(0.5))
            if got and not t_first:  # the clock starts once the group is joined and the first records are in
                first, t_first = got, time.perf_counter()
        if got < n:
            raise TimeoutError(f"raw consume read {got} of {n} frames in {timeout_s:.0f}s")
        return (got - first) / max(1e-9, time.perf_counter() - t_first)
    finally:
        consumer.close()


def raw_consume_confluent_fps(cfg: WorkerConfig, n: int, timeout_s: float = 120.0) -> Optional[float]:
    """``raw_consume_fps`` through the optional confluent-kafka client; None when it is not installed."""
    import importlib.util

    if importlib.util.find_spec("confluent_kafka") is None:
        return None
    return raw_consume_fps(replace(cfg, kafka_client="confluent"), n, timeout_s)


def pipeline_fps(
    cfg: WorkerConfig,
    extractor: Any,
    n: int,
    timeout_s: float = 600.0,
    registry: Optional[CollectorRegistry] = None,
) -> float:
    """A whole worker on the frames topic; frames/s from its first acknowledged score to its last.
    The worker's metrics land on ``registry`` (see ``where_time_went``)."""
    from worker.loop import Worker

    registry = registry or CollectorRegistry()
    worker = Worker(cfg, registry=registry, embedder_factory=lambda spec: extractor)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="bench-worker", daemon=True)
    thread.start()
    done = lambda: registry.get_sample_value("framewatch_frames_scored_total", {"index": cfg.index}) or 0.0  # noqa: E731
    try:
        first, t_first, deadline = 0.0, 0.0, time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            count = done()
            if count and not t_first:
                first, t_first = count, time.perf_counter()
            if count >= n:
                return (count - first) / max(1e-9, time.perf_counter() - t_first)
            time.sleep(POLL_S)
        raise TimeoutError(f"the worker scored {done():.0f} of {n} frames in {timeout_s:.0f}s")
    finally:
        stop.set()
        thread.join(60)


def latency_at(cfg: WorkerConfig, extractor: Any, frames: Sequence[FrameRecord], rate: float,
               timeout_s: float = 300.0) -> list[float]:  # fmt: skip
    """Seconds from capture (= publication) to the score record read back, for frames offered at ``rate``/s."""
    from framewatch.console import follow_scores
    from worker.loop import Worker

    worker = Worker(cfg, registry=CollectorRegistry(), embedder_factory=lambda spec: extractor)
    stop, follow_stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="bench-worker", daemon=True)
    thread.start()
    latencies: list[float] = []

    def follow() -> None:
        for rec in follow_scores(cfg.kafka, cfg.topics.scores, follow_stop, from_beginning=True):
            latencies.append(time.time() - rec.capture_time)
            if len(latencies) >= len(frames):
                follow_stop.set()

    follower = threading.Thread(target=follow, name="bench-follow", daemon=True)
    follower.start()
    try:
        _wait(lambda: worker.status().serving, 60)
        produce(cfg.kafka, cfg.topics.frames, frames, rate=rate, stamp=True)
        follower.join(timeout_s)
        return latencies
    finally:
        follow_stop.set()
        stop.set()
        thread.join(60)


def percentiles(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def topics_for(tag: str) -> Topics:
    return Topics(frames=f"bench-{tag}-frames", scores=f"bench-{tag}-scores", dead_letters=f"bench-{tag}-dlq")


def _wait(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def where_time_went(registry: CollectorRegistry) -> str:
    """The worker's busy seconds per stage and its mean batch size, from its own metrics."""
    get = registry.get_sample_value
    busy = ", ".join(
        f"{stage} {get('framewatch_stage_busy_seconds_total', {'stage': stage}) or 0.0:.1f}s"
        for stage in ("consume", "decode", "embed", "deliver")
    )
    batches = get("framewatch_batch_size_count") or 0.0
    mean = (get("framewatch_batch_size_sum") or 0.0) / batches if batches else 0.0
    return f"busy {busy}; mean batch {mean:.1f} over {batches:.0f} batches"
