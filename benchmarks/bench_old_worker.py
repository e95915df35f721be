"""`framewatch bench`'s measurements against the worker before the overlapping stages (commit c5934fd).

    rm -rf /tmp/before && mkdir /tmp/before && git archive c5934fd | tar -x -C /tmp/before
    cp framewatch/bench.py /tmp/before/framewatch/ && cp worker/stages.py worker/extract.py /tmp/before/worker/
    PYTHONPATH=/tmp/before .venv/bin/python benchmarks/bench_old_worker.py 160

The old worker decodes in its loop even with a no-op embedder, so its "null pipeline" includes decoding.
"""

import pathlib
import sys
import tempfile
import time

import numpy as np

from framewatch import bench
from framewatch.admin import ensure_topics, repository
from framewatch.services import LocalBroker, LocalRedis
from index_store.build import fit_from_images, spec_for
from index_store.embedder import Embedder
from index_store.fitting import FitConfig
from wire.settings import KafkaSettings, RedisSettings
from worker.config import WorkerConfig
from worker.decode import decode_image

n = int(sys.argv[1])


class Null:
    def __init__(self, spec):
        self.spec = spec

    def embed(self, images):
        return np.zeros((len(images), self.spec.dim), np.float32)


with LocalBroker() as b, LocalRedis() as r:
    kafka, redis = KafkaSettings(bootstrap=b.bootstrap), RedisSettings(url=r.url)
    emb = Embedder(spec_for("efficientnet_lite0", "pypi"), batch_size=32)
    images = bench.synthetic_jpegs(16)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [pathlib.Path(tmp) / f"{i}.jpg" for i in range(16)]
        for p, d in zip(paths, images):
            p.write_bytes(d)
        meta, idx = fit_from_images("p", paths, emb, FitConfig(), progress=False)
    repository(redis).publish(meta, idx)
    topics = bench.topics_for("p")
    ensure_topics(kafka, topics, partitions=2)
    frames = bench.records(images, n)
    bench.produce(kafka, topics.frames, bench.records(images, 5 * n))
    t0 = time.perf_counter()
    [decode_image(f.image) for f in frames]
    print("before decode_fps (one thread, full scale)", n / (time.perf_counter() - t0))
    emb.embed([decode_image(f.image) for f in frames[:32]])
    t0 = time.perf_counter()
    for i in range(0, n, 32):
        emb.embed([decode_image(f.image) for f in frames[i : i + 32]])
    print("before extractor_fps", n / (time.perf_counter() - t0))

    def cfg(name):
        return WorkerConfig(
            kafka=kafka,
            redis=redis,
            index="p",
            topics=topics,
            group_id="g-" + name,
            max_batch=32,
            max_wait_s=0.05,
            metrics_host="127.0.0.1",
            metrics_port=0,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            index_poll_s=1.0,
        )

    print("before raw_consume_fps", bench.raw_consume_fps(cfg("raw"), 5 * n))
    print(
        "before null_pipeline_fps (decode, no embed)", bench.pipeline_fps(cfg("null"), Null(emb.spec), 5 * n)
    )
    print("before pipeline_fps", bench.pipeline_fps(cfg("pipe"), emb, n))
