"""Every score record says why: a patch index gives the hotspot and anomaly map, a global index the
nearest normal training frames; `framewatch explain` draws it. Real broker, real Redis, the real CLI."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from index_store.repository import IndexRepository
from tests.integration import harness as h
from wire.anomaly_map import decode_map
from wire.records import FrameRecord

pytestmark = pytest.mark.integration

W, H = 128, 96  # not square: the hotspot must come back in the frame's own pixels
SQUARE = (88, 24, 108, 44)  # x0, y0, x1, y1 of the pasted defect (3.3 % of the frame)


def texture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(60, 190, (H // 8, W // 8), dtype=np.uint8)).resize(
        (W, H), Image.BILINEAR
    )
    return np.clip(np.asarray(coarse, dtype=np.float64) + rng.normal(0, 12, (H, W)), 0, 255).astype(np.uint8)


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def frame(fid: str, data: bytes, seq: int) -> FrameRecord:
    return FrameRecord(frame_id=fid, source="cam", sequence=seq, capture_time=0.0, image=data,
                       content_type="image/png", origin=f"{fid}.png")  # fmt: skip


def fit(tmp_path: Path, redis_url: str, prefix: str, monkeypatch, kind: str) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    from framewatch.cli import main

    train, hold = tmp_path / "train", tmp_path / "holdout"
    train.mkdir()
    hold.mkdir()
    for s in range(8):
        (train / f"normal-{s}.png").write_bytes(png(texture(s)))
    (hold / "held.png").write_bytes(png(texture(100)))
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    argv = ["index", "fit", str(train), "--name", "idx", "--kind", kind, "--backbone", "resnet18",
            "--weights", "random:0", "--holdout", str(hold), "--redis", redis_url, "--batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    return train, hold / "held.png"


def test_worker_scores_a_patch_index_with_hotspot_and_map(kafka_settings, redis_url, redis_client, unique,
                                                         tmp_path, monkeypatch):  # type: ignore[no-untyped-def]  # fmt: skip
    from framewatch.cli import main

    prefix = f"t-{unique}"
    _, held = fit(tmp_path, redis_url, prefix, monkeypatch, "patch")
    meta = IndexRepository(redis_client, prefix).meta("idx")
    assert meta.spec["kind"] == "patch" and meta.spec["layers"] == ["layer2", "layer3"]

    broken = texture(101)
    broken[SQUARE[1] : SQUARE[3], SQUARE[0] : SQUARE[2]] = 255
    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    try:
        h.produce_frames(kafka_settings, topics.frames, [frame("held", held.read_bytes(), 0),
                                                          frame("broken", png(broken), 1)])  # fmt: skip
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 2, timeout=120)
    finally:
        running.close()
    records = {r.frame_id: r for r in h.scores(kafka_settings, topics.scores)}
    held_rec, broken_rec = records["held"], records["broken"]

    # the worker embeds exactly as fit did: the one holdout image set the threshold to its own score
    assert held_rec.score == pytest.approx(meta.threshold, rel=1e-4)
    assert broken_rec.score > meta.threshold and broken_rec.is_anomaly
    for rec in (held_rec, broken_rec):
        assert rec.frame_topic == topics.frames and rec.frame_offset >= 0
        assert rec.neighbors is None
        grid = decode_map(rec.anomaly_map)
        assert len(grid) == 28 and len(grid[0]) == 36  # the whole 4:3 frame at 224x288, stride 8
        assert rec.anomaly_map["box"] == [0, 0, W, H] and rec.frame_size == [W, H] and rec.geometry == "full"
        x0, y0, x1, y1 = rec.hotspot
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    x0, y0, x1, y1 = broken_rec.hotspot
    assert x0 < SQUARE[2] and SQUARE[0] < x1 and y0 < SQUARE[3] and SQUARE[1] < y1  # boxes overlap

    monkeypatch.setenv("FRAMEWATCH_TOPIC_SCORES", topics.scores)
    out = tmp_path / "why.png"
    assert main(["explain", "broken", "--kafka", kafka_settings.bootstrap, "--out", str(out)]) == 0
    with Image.open(out) as im:
        assert im.size == (2 * W, H)  # the frame beside the frame with its map


def test_worker_names_the_nearest_normal_frames_and_the_region_for_a_global_index(kafka_settings, redis_url, unique,
                                                                  tmp_path, monkeypatch):  # type: ignore[no-untyped-def]  # fmt: skip
    from framewatch.cli import main

    prefix = f"t-{unique}"
    train, _ = fit(tmp_path, redis_url, prefix, monkeypatch, "global")
    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    try:
        copy = (train / "normal-3.png").read_bytes()
        h.produce_frames(kafka_settings, topics.frames, [frame("copy", copy, 0)])
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 1, timeout=120)
    finally:
        running.close()
    rec = h.scores(kafka_settings, topics.scores)[0]
    # a whole-frame global index pools 4x6 regions: a coarse map over the frame, and its worst region
    # names the nearest normal frames
    assert len(decode_map(rec.anomaly_map)) == 4 and len(decode_map(rec.anomaly_map)[0]) == 6
    assert rec.anomaly_map["box"] == [0, 0, W, H] and rec.hotspot is not None
    assert rec.neighbors is not None and len(rec.neighbors) == 2
    assert Path(rec.neighbors[0]) == (train / "normal-3.png").resolve()  # a training frame is its own nearest

    monkeypatch.setenv("FRAMEWATCH_TOPIC_SCORES", topics.scores)
    out = tmp_path / "why.png"
    assert main(["explain", "copy", "--kafka", kafka_settings.bootstrap, "--out", str(out)]) == 0
    with Image.open(out) as im:  # the frame beside its map, above the frame and its two neighbours
        assert im.size == (max(2 * W, 3 * 256), H + 256 + 20)


def test_worker_refuses_a_patch_index_it_cannot_reproduce(kafka_settings, redis_url, unique):  # type: ignore[no-untyped-def]
    from index_store.errors import SpecMismatch
    from index_store.spec import EmbedderSpec

    prefix = f"t-{unique}"
    spec = EmbedderSpec("resnet18", "random:0", resize=64, crop=64, kind="patch", layers=("layer2", "layer9"))

    vectors = np.zeros((4, 384), np.float32)
    with pytest.raises(SpecMismatch, match="no feature tap 'layer9'"):  # publish refuses it before writing
        h.publish_index(redis_url, prefix, "idx", spec=spec, vectors=vectors)
    # as a newer or buggy tool might write it anyway
    h.write_raw_version(redis_url, prefix, "idx", h.raw_meta(spec, n=4, dim=384), vectors.tobytes())
    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    try:
        assert h.wait_until(lambda: "no feature tap 'layer9'" in h.readyz(running)[1], timeout=60), h.readyz(running)
        assert h.readyz(running)[0] == 503
    finally:
        running.close()
