"""Patch kind: feature grids, memory compression, anomaly maps and hotspots (random-weight ResNet-18, small)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from index_store import anomaly_maps, fitting, knn, selection
from index_store.embedder import Embedder
from index_store.spec import EmbedderSpec, default_spec

SPEC = dataclasses.replace(default_spec("resnet18", "patch"), weights="random:0", resize=128, crop=128)


def texture(seed: int, size: tuple[int, int] = (128, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = Image.fromarray(rng.integers(60, 190, (h // 8, w // 8), dtype=np.uint8)).resize(
        (w, h), Image.BILINEAR
    )
    fine = rng.normal(0, 12, (h, w))
    return np.clip(np.asarray(coarse, dtype=np.float64) + fine, 0, 255).astype(np.uint8)


def rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a).convert("RGB")


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(SPEC, device="cpu", batch_size=8)


def test_patch_embedder_gives_a_grid_at_stride_8(embedder: Embedder) -> None:
    feats = embedder.embed([rgb(texture(0)), rgb(texture(1))])
    assert feats.shape == (2, 16, 16, SPEC.dim) and SPEC.dim == 256
    again = Embedder(SPEC, device="cpu").embed([rgb(texture(0))])
    np.testing.assert_allclose(again[0], feats[0], rtol=1e-4, atol=1e-5)  # projection seeded: reproducible


def test_a_small_defect_scores_high_and_its_hotspot_surrounds_it(embedder: Embedder) -> None:
    train = embedder.embed([rgb(texture(s)) for s in range(8)])
    normal = texture(100)
    broken = normal.copy()
    broken[24:40, 88:104] = 255  # a 16x16 bright square: 1.6 % of the frame
    for cfg in (fitting.FitConfig(), fitting.FitConfig(clusters=200), fitting.FitConfig(coreset=200)):
        index, cal, _ = fitting.fit(train, cfg)
        feats = embedder.embed([rgb(normal), rgb(broken)])
        scores, maps = anomaly_maps.score_maps(index, feats)
        assert maps.shape == (2, 16, 16)
        assert scores[1] > scores[0] and scores[1] > cal.threshold, cfg
        x0, y0, x1, y1 = anomaly_maps.hotspot(maps[1], SPEC, 128, 128)
        assert x0 <= 96 <= x1 and y0 <= 32 <= y1, (cfg, (x0, y0, x1, y1))
        assert (x1 - x0) * (y1 - y0) < 0.25 * 128 * 128


def test_hotspot_is_in_the_frames_own_pixels() -> None:
    """A 640x480 frame, resize 256 / crop 224: the crop starts at x = (341 - 224) / 2 in resized pixels."""
    spec = EmbedderSpec("resnet18", resize=256, crop=224, kind="patch", layers=("layer2", "layer3"))
    amap = np.zeros((28, 28), np.float32)
    amap[0, 0] = 1.0
    x0, y0, x1, y1 = anomaly_maps.hotspot(amap, spec, 640, 480)
    scale = 480 / 256
    left = round((int(256 * 640 / 480) - 224) / 2) * (640 / int(256 * 640 / 480))
    top = round((256 - 224) / 2) * scale
    assert abs(x0 - left) <= 1 and abs(y0 - top) <= 1
    assert abs((x1 - x0) - 8 * scale) <= 2 and abs((y1 - y0) - 8 * scale) <= 2
    assert anomaly_maps.map_region(spec, 640, 480)[0] == pytest.approx(left, abs=1)


def test_coreset_keeps_the_outliers_that_kmeans_would_average_away() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, (500, 16)).astype(np.float32)
    far = np.full((1, 16), 30.0, np.float32)
    data = np.concatenate([base, far])
    rows = selection.coreset_rows(data, 20, seed=1)
    assert len(rows) == 20 and 500 in rows
    index = knn.build_coreset(data, 20)
    assert index.memory == "coreset" and index.size == 20
    scores, ids = index.search(far)
    assert ids.shape == (1, 2) and index.vectors[ids[0, 0]].tolist() == far[0].tolist()
