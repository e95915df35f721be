"""A frame the worker scores gets the score its image got at fit time: one preprocessing path.

CPU path: JPEG decoded at reduced DCT scale (PIL draft mode) on both sides. The
only differences left are float32 rounding in batches of different sizes, so
the tolerance is relative 1e-4.

OpenVINO (``--runtime openvino``, the CPU default when installed): an index
fit with torch is served by OpenVINO fp32 within the same tolerance (the two
differ by at most 1e-6 relative on features: tests/unit/test_openvino_runtime.py).

CUDA path (only where a GPU is present): the worker decodes JPEG batches on the
device (nvJPEG) and resizes with tensor ops, in bf16; fit time decodes with PIL.
The tolerance stated for it, relative 5e-2, is provisional: no GPU was lent when
this was written, so this case has never run (benchmarks/gpu_check.sh runs it).
"""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest
import redis

from framewatch.bench import synthetic_jpegs
from framewatch.cli import main
from index_store import fitting
from index_store.build import embed_paths
from index_store.embedder import Embedder
from index_store.repository import IndexRepository
from tests.integration import harness as h
from wire.records import FrameRecord

pytestmark = pytest.mark.integration
RELATIVE_TOLERANCE = {"cpu": 1e-4, "cuda": 5e-2}


def cuda_present() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def openvino_present() -> bool:
    from index_store.openvino_runtime import installed

    return installed()


@pytest.mark.parametrize("device,runtime", [("cpu", "torch"), pytest.param("cpu", "openvino", marks=pytest.mark.skipif(
    not openvino_present(), reason="openvino is not installed")), pytest.param("cuda", "torch", marks=pytest.mark.skipif(
    not cuda_present(), reason="no CUDA device here: the nvJPEG path is checked where one is"))])  # fmt: skip
def test_worker_score_equals_fit_time_score_for_the_same_jpeg(kafka_settings, redis_url, unique, tmp_path,
                                                              monkeypatch, device, runtime):  # fmt: skip
    """The index is always fit with torch; the worker runs ``runtime``."""
    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    jpegs = synthetic_jpegs(9, seed=1)  # 1280x720 frames of a real photo
    (tmp_path / "train").mkdir()
    (tmp_path / "new").mkdir()
    for i, data in enumerate(jpegs):
        (tmp_path / ("train" if i < 6 else "new") / f"{i}.jpg").write_bytes(data)
    assert main(["index", "fit", str(tmp_path / "train"), "--name", "same", "--backbone", "resnet18",
                 "--weights", "random", "--redis", redis_url, "--device", device, "--runtime", "torch"]) == 0  # fmt: skip

    repo = IndexRepository(redis.Redis.from_url(redis_url), prefix)
    meta, index = repo.load("same")
    new = sorted((tmp_path / "new").iterdir())
    feats = embed_paths(Embedder(meta.embedder_spec, device=device, runtime="torch"), new, progress=False)
    at_fit = fitting.score(index, feats, meta.embedder_spec)  # a whole-frame global index: its 4x6 regions

    topics = h.topics_for(unique, kafka_settings, partitions=1)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, index="same",
                                             device=device, runtime=runtime))  # fmt: skip
    try:
        frames = [
            FrameRecord(p.stem, "cam", i, time.time(), p.read_bytes(), "image/jpeg")
            for i, p in enumerate(new)
        ]
        h.produce_frames(kafka_settings, topics.frames, frames)
        assert h.wait_for_ids(kafka_settings, topics, {f.frame_id for f in frames}, 90)
        by_worker = {r.frame_id: r.score for r in h.scores(kafka_settings, topics.scores)}
        assert running.worker.health is not None
        with urllib.request.urlopen(
            f"http://127.0.0.1:{running.worker.health.port}/metrics", timeout=10
        ) as resp:
            metrics = resp.read().decode()
    finally:
        running.close()
    worker_scores = np.array([by_worker[p.stem] for p in new])
    assert np.all(at_fit > 0)
    np.testing.assert_allclose(worker_scores, at_fit, rtol=RELATIVE_TOLERANCE[device])
    for stage in ("consume", "decode", "embed", "deliver"):  # where the time went, per stage
        assert h.metric_value(metrics, f'framewatch_stage_busy_seconds_total{{stage="{stage}"}}') > 0
    for queue in ("decode", "batch", "embed", "deliver"):
        assert f'framewatch_queue_depth{{queue="{queue}"}}' in metrics
