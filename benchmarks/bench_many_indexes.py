"""One index per camera at scale: 1,000 camera indexes served by one worker's index machinery.

Starts its own Redis (framewatch.services.LocalRedis), publishes ``--cameras``
indexes (``--vectors`` x ``--dim`` each, exact kNN, as a stream fit of a few
hundred frames gives) and one fallback index of the same size, then measures,
in this one process:

1. load: every camera's index loaded on demand (worker/camera_indexes.py, one
   loader thread, from Redis), total and per index;
2. memory: the process's RSS before and after, and what the budget counts;
3. per-frame overhead: the scoring step (routing, index lookup, kNN search,
   record) for batches of ``--batch`` frames from random cameras, each scored
   by its own index, against the same frames all scored by the single fallback
   index: interleaved, side by side, best of ``--repeat``. The embedding is left
   out (fixed random vectors: it costs the same either way);
4. the same with a budget that holds half the cameras (LRU evictions and
   reloads on demand, frames from random cameras: the worst case);
5. a new version: publish it (one MULTI/EXEC with its event), time until the
   worker serves it, through the IndexSet watcher's one subscription;
6. the watcher's idle cost: Redis commands in ``--idle`` seconds with every
   camera index held and nothing changing.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_many_indexes.py [--cameras 1000] [--vectors 100] [--dim 512]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import time

import numpy as np
import redis
from prometheus_client import CollectorRegistry

from framewatch.services import LocalRedis
from index_store.knn import build_exact
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from wire.records import FrameRecord
from worker.camera_indexes import CameraIndexes
from worker.indexes import IndexSet
from worker.inflight import InFlight
from worker.metrics import CameraIndexMetrics, WorkerMetrics
from worker.routing import Routing
from worker.scoring import Scorer

PREFIX = "bench"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class FixedEmbedder:
    """Embeddings made up front: the scoring step is measured, not the CNN."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = embeddings

    def embed(self, prepared: list[int]) -> np.ndarray:
        return self.embeddings[prepared]


def publish(repo: IndexRepository, name: str, spec: EmbedderSpec, n: int, seed: int) -> IndexMeta:
    vectors = np.random.default_rng(seed).normal(size=(n, spec.dim)).astype(np.float32)
    meta = IndexMeta(name=name, kind="exact", k=2, dim=spec.dim, n_vectors=n, spec=spec.to_dict(), threshold=1e9)
    return repo.publish(meta, build_exact(vectors))


def frames_for(sources: list[str]) -> list[InFlight]:
    return [InFlight.decoded(FrameRecord(f"f{i}", s, i, time.time(), b"", "image/png"), i, offset=i)
            for i, s in enumerate(sources)]  # fmt: skip


def best_per_frame(score, batches: list[list[InFlight]], repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Best (over ``repeat`` passes) mean microseconds per frame of scoring ``batches``."""
    best = float("inf")
    n = sum(len(b) for b in batches)
    for _ in range(repeat):
        t0 = time.perf_counter()
        for batch in batches:
            score(batch)
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", type=int, default=1000)
    ap.add_argument("--vectors", type=int, default=100, help="vectors per camera index")
    ap.add_argument("--dim", type=int, default=512, help="512: resnet18; 2048: resnet50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--versions", type=int, default=20, help="new versions timed")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle watcher counted")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    backbone = {512: "resnet18", 2048: "resnet50"}[args.dim]
    spec = EmbedderSpec(backbone)
    names = [f"cam-{i:04d}" for i in range(args.cameras)]
    per_index = 2 * args.vectors * args.dim * 4

    with LocalRedis() as server:
        def repo_factory() -> IndexRepository:
            return IndexRepository(redis.Redis.from_url(server.url), PREFIX)

        repo = repo_factory()
        t0 = time.perf_counter()
        publish(repo, "yard", spec, args.vectors, 0)
        for i, name in enumerate(names):
            publish(repo, name, spec, args.vectors, i + 1)
        print(f"{args.cameras} camera indexes of {args.vectors} x {args.dim} (exact; {per_index / 1024:.0f} KiB "
              f"held each) published in {time.perf_counter() - t0:.1f} s; Redis {server.url}")  # fmt: skip

        registry = CollectorRegistry()
        indexes = IndexSet(repo_factory, ["yard"], WorkerMetrics(registry), poll_s=5.0)
        indexes.refresh(repo)  # the fallback, as the worker loads it at start
        budget = 2 * args.cameras * per_index  # everything fits
        cams = CameraIndexes(repo_factory, lambda: indexes.spec, budget, CameraIndexMetrics(registry), wait_s=60.0)
        indexes.on_event, indexes.on_subscribe = cams.changed, cams.resync
        cams.start()
        indexes.start()

        # 1, 2: load every camera's index on demand
        gc.collect()
        rss0 = rss_mib()
        t0 = time.perf_counter()
        for name in names:
            cams.want(name)
        cams.resolve(names)
        load_s = time.perf_counter() - t0
        gc.collect()
        rss1 = rss_mib()
        assert len(cams.cache) == args.cameras, cams.summary()
        print(f"\n1. load on demand: {args.cameras} indexes in {load_s:.2f} s ({load_s / args.cameras * 1e3:.2f} ms "
              f"each, one loader thread)")  # fmt: skip
        print(f"2. memory: RSS +{rss1 - rss0:.0f} MiB for {args.cameras} indexes; the budget counts "
              f"{cams.cache.bytes / 2**20:.0f} MiB ({(rss1 - rss0) * 2**20 / max(cams.cache.bytes, 1):.2f}x)")  # fmt: skip

        # 3: per-frame overhead, side by side
        rng = np.random.default_rng(0)
        n_frames = args.batch * args.batches
        embeddings = rng.normal(size=(n_frames, args.dim)).astype(np.float32)
        sources = [names[j] for j in rng.integers(0, args.cameras, n_frames)]
        batches = [frames_for(sources)[i : i + args.batch] for i in range(0, n_frames, args.batch)]
        for b, batch in enumerate(batches):  # the prepared value is the row of the frame's embedding
            for j, f in enumerate(batch):
                f.prepared = b * args.batch + j
        fixed = {"yard": indexes.snapshot()["yard"]}
        single = Scorer(FixedEmbedder(embeddings), Routing.parse("yard"))
        per_camera = Scorer(FixedEmbedder(embeddings), Routing.parse("yard", ["cam-*={source}"]), cameras=cams)
        for scorer in (single, per_camera):  # warm: faiss threads, caches
            scorer.score(batches[0], fixed)
        one = per = float("inf")
        for _ in range(args.repeat):  # interleaved, so both see the same machine
            one = min(one, best_per_frame(lambda b: single.score(b, fixed), batches, 1))
            per = min(per, best_per_frame(lambda b: per_camera.score(b, fixed), batches, 1))
        records = per_camera.score(batches[0], fixed)
        assert all(r.index_name == r.source and not r.index_fallback for r in records)
        print(f"3. scoring, batches of {args.batch} frames from random cameras (embedding excluded), best of "
              f"{args.repeat}:")  # fmt: skip
        print(f"   one index for all:  {one:8.1f} us/frame")
        print(f"   own index each:     {per:8.1f} us/frame  (+{per - one:.1f} us/frame, {per / one:.1f}x)")

        # 4: half the cameras fit: LRU evictions and reloads
        half = CameraIndexes(repo_factory, lambda: indexes.spec, args.cameras // 2 * per_index,
                             CameraIndexMetrics(CollectorRegistry()), wait_s=60.0)  # fmt: skip
        half.start()
        churn = Scorer(FixedEmbedder(embeddings), Routing.parse("yard", ["cam-*={source}"]), cameras=half)
        for name in names:
            half.want(name)
        half.resolve(names)
        loads0 = half.metrics.loads.labels("loaded")._value.get()
        t0 = time.perf_counter()
        for batch in batches:
            churn.score(batch, fixed)
        churn_us = (time.perf_counter() - t0) / n_frames * 1e6
        reloads = half.metrics.loads.labels("loaded")._value.get() - loads0
        half.stop()
        print(f"4. budget for half the cameras ({half.cache.budget_bytes / 2**20:.0f} MiB), random cameras: "
              f"{churn_us:.1f} us/frame, {reloads / n_frames:.0%} of frames reloaded their index "
              f"({half.cache.evictions} evictions)")  # fmt: skip

        # 5: a new version takes effect through the one subscription
        delays = []
        for i in range(args.versions):
            name = names[(i * 37) % args.cameras]
            held = cams.cache.peek(name)
            assert held is not None
            t0 = time.perf_counter()
            meta = publish(repo, name, spec, args.vectors, 10_000 + i)
            while (cams.cache.peek(name) or held).meta.version != meta.version:
                time.sleep(0.0005)
                if time.perf_counter() - t0 > 30:
                    raise SystemExit(f"version {meta.version} of {name} never took effect")
            delays.append((time.perf_counter() - t0) * 1e3)
        delays.sort()
        print(f"5. new version to served (publish -> event -> reload), {args.versions} versions: median "
              f"{statistics.median(delays):.1f} ms, max {delays[-1]:.1f} ms")  # fmt: skip

        # 6: the watcher idle, every camera held
        client = redis.Redis.from_url(server.url)
        client.config_resetstat()
        time.sleep(args.idle)
        commands = int(client.info("stats")["total_commands_processed"]) - 1  # less the INFO itself
        print(f"6. watcher idle with {len(cams.cache)} camera indexes held: {commands} Redis commands in "
              f"{args.idle:.0f} s (the fallback's periodic check every 5 s; none per camera)")  # fmt: skip
        indexes.stop()
        cams.stop()


if __name__ == "__main__":
    main()
