"""The whole-frame geometry end to end: `index fit` with tiles, an ignore zone and position-aware scoring,
a worker on a real broker and Redis, and score records that cover the whole 16:9 frame.

The worker's score for each frame equals the fit-time score of the same JPEG (one geometry for both),
and the records say the size they saw; a frame of another aspect is scored and said to be stretched.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
import redis
from PIL import Image

from framewatch.bench import synthetic_jpegs
from framewatch.cli import main
from index_store import fitting
from index_store.build import embed_paths
from index_store.embedder import Embedder
from index_store.keys import Keys
from index_store.repository import IndexRepository
from tests.integration import harness as h
from wire.records import FrameRecord

pytestmark = pytest.mark.integration
CLOCK = "0,0,0.25,0.1"


def test_patch_tiles_zones_and_position_radius_score_as_at_fit_time(kafka_settings, redis_url, unique, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    jpegs = synthetic_jpegs(9, seed=2)  # 1280x720 frames of a real photo
    (tmp_path / "train").mkdir()
    (tmp_path / "new").mkdir()
    for i, data in enumerate(jpegs):
        (tmp_path / ("train" if i < 6 else "new") / f"{i}.jpg").write_bytes(data)
    assert main(["index", "fit", str(tmp_path / "train"), "--name", "yard", "--backbone", "resnet18",
                 "--weights", "random", "--kind", "patch", "--clusters", "0", "--input-size", "64",
                 "--tiles", "1x2", "--ignore", CLOCK, "--position-radius", "1", "--redis", redis_url]) == 0  # fmt: skip

    repo = IndexRepository(redis.Redis.from_url(redis_url), prefix)
    meta, index = repo.load("yard")
    spec = meta.embedder_spec
    assert spec.is_full and spec.tiles == (1, 2) and spec.zones == ((0.0, 0.0, 0.25, 0.1),)
    assert spec.position_radius == 1 and hasattr(index, "search_grid") and meta.layout["radius"] == 1
    new = sorted((tmp_path / "new").iterdir())
    at_fit = fitting.score(index, embed_paths(Embedder(spec, device="cpu"), new, progress=False), spec)

    buf = io.BytesIO()  # the same camera reconfigured to 4:3
    Image.open(new[0]).resize((960, 720)).save(buf, "JPEG", quality=90)
    topics = h.topics_for(unique, kafka_settings, partitions=1)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, index="yard"))
    try:
        frames = [FrameRecord(p.stem, "cam", i, time.time(), p.read_bytes(), "image/jpeg") for i, p in enumerate(new)]
        frames.append(FrameRecord("four-three", "cam", 9, time.time(), buf.getvalue(), "image/jpeg"))
        h.produce_frames(kafka_settings, topics.frames, frames)
        assert h.wait_for_ids(kafka_settings, topics, {f.frame_id for f in frames}, 90)
        records = {r.frame_id: r for r in h.scores(kafka_settings, topics.scores)}
    finally:
        running.close()
    np.testing.assert_allclose([records[p.stem].score for p in new], at_fit, rtol=1e-4)
    for p in new:
        r = records[p.stem]
        assert r.frame_size == [1280, 720] and r.geometry == "full"
        assert r.anomaly_map is not None and r.anomaly_map["box"] == [0, 0, 1280, 720]
        assert r.anomaly_map["ignore"] == [[0, 0, 320, 72]]
        x0, y0, x1, y1 = r.hotspot
        assert 0 <= x0 < x1 <= 1280 and 0 <= y0 < y1 <= 720
        assert not (x1 <= 320 and y1 <= 72), "the hotspot lies inside the ignore zone"
    stretched = records["four-three"]
    assert stretched.frame_size == [960, 720] and stretched.geometry == "full/stretched"
    assert np.isfinite(stretched.score)


def _yard(seed: int, intruder: bool = False) -> bytes:
    """A fixed 1280x720 scene (seeded by 0) with per-frame sensor noise; ``intruder``: a bright figure a
    fifth of the frame's height standing in the right-hand edge band, where a center crop never looks."""
    coarse = np.random.default_rng(0).integers(60, 190, (18, 32), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((1280, 720), Image.BILINEAR), dtype=np.float64)
    frame = np.clip(base + np.random.default_rng(seed).normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    if intruder:
        frame[300:444, 1180:1250] = 250
    buf = io.BytesIO()
    Image.fromarray(frame).convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_a_default_global_index_sees_the_edge_of_a_wide_frame_and_refuses_a_corrupt_region_layout(
    kafka_settings, redis_url, unique, tmp_path, monkeypatch
):  # fmt: skip
    """A camera site's first case: `index fit` at its defaults (a whole-frame global index of 4x6 regions)
    and a worker; someone at the very edge of a 16:9 frame is flagged, with the hotspot over them. Then a
    version whose region layout was damaged in Redis is refused, /readyz says so, and the worker goes on
    scoring with the version it holds."""
    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    (tmp_path / "train").mkdir()
    for s in range(1, 16):
        (tmp_path / "train" / f"{s}.jpg").write_bytes(_yard(s))
    assert main(["index", "fit", str(tmp_path / "train"), "--name", "yard", "--backbone", "resnet18",
                 "--weights", "random", "--input-size", "96", "--redis", redis_url]) == 0  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    repo = IndexRepository(client, prefix)
    meta, index = repo.load("yard")
    assert meta.embedder_spec.regions == (4, 6) and meta.layout["grid"] == [4, 6]

    topics = h.topics_for(unique, kafka_settings, partitions=1)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, index="yard"))
    try:
        frames = [FrameRecord(f"n{s}", "cam", s, time.time(), _yard(100 + s), "image/jpeg") for s in range(4)]
        frames.append(FrameRecord("edge", "cam", 9, time.time(), _yard(200, intruder=True), "image/jpeg"))
        h.produce_frames(kafka_settings, topics.frames, frames)
        assert h.wait_for_ids(kafka_settings, topics, {f.frame_id for f in frames}, 90)
        records = {r.frame_id: r for r in h.scores(kafka_settings, topics.scores)}
        edge = records["edge"]
        assert edge.is_anomaly and edge.score > max(records[f"n{s}"].score for s in range(4))
        x0, _y0, x1, _y1 = edge.hotspot
        assert x0 >= 1280 * 2 // 3 and x1 <= 1280, edge.hotspot  # over the figure at the right edge
        assert len(edge.neighbors or []) == 2  # the nearest normal frames, judged at that region

        # version 2: the same index, its layout damaged in Redis (region rows that are not frame numbers)
        v2 = repo.publish(meta, index, activate=False)
        key = Keys(prefix).meta("yard", v2.version)
        damaged = json.loads(client.get(key))
        damaged["layout"]["rows"] = ["x"] * (4 * 6 * damaged["layout"]["per_cell"])
        client.set(key, json.dumps(damaged))
        repo.activate("yard", v2.version)
        status_ok = lambda: h.readyz(running)  # noqa: E731  as an orchestrator reads it
        assert h.wait_until(lambda: "version 2 refused" in status_ok()[1], 15), status_ok()
        code, body = status_ok()
        assert code == 200 and "yard@1" in body and "rows" in body, body
        h.produce_frames(kafka_settings, topics.frames, [FrameRecord("after", "cam", 10, time.time(), _yard(300), "image/jpeg")])
        assert h.wait_for_ids(kafka_settings, topics, {"after"}, 60)
        after = next(r for r in h.scores(kafka_settings, topics.scores) if r.frame_id == "after")
        assert after.index_version == 1
    finally:
        running.close()
    assert running.exit_code == [0]
