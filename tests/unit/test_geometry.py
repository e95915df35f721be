"""Whole-frame geometry: a 16:9 frame is seen edge to edge, tiles, ignore zones, old specs unchanged.

Random-weight ResNet-18 at a small input size: what matters here is where the model looks, not how well.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from index_store import anomaly_maps, fitting, geometry
from index_store.embedder import Embedder
from index_store.errors import SpecMismatch
from index_store.spec import EmbedderSpec, default_spec

W, H = 320, 180  # a 16:9 camera
BASE = dataclasses.replace(default_spec("resnet18", "patch", view="full"), weights="random:0", input_size=96)


def scene(seed: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """A fixed scene (seeded by 0) with per-frame noise (seeded by ``seed``)."""
    w, h = size
    base = np.random.default_rng(0)
    coarse = Image.fromarray(base.integers(60, 190, (h // 10, w // 10), dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    noise = np.random.default_rng(seed).normal(0, 6, (h, w))
    return np.clip(np.asarray(coarse, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def rgb(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a).convert("RGB")


def with_square(a: np.ndarray, x: int, y: int, side: int = 24) -> np.ndarray:
    out = a.copy()
    out[y : y + side, x : x + side] = 255
    return out


def fit(spec: EmbedderSpec, n: int = 8):  # type: ignore[no-untyped-def]
    emb = Embedder(spec, device="cpu", batch_size=8)
    train = emb.embed([rgb(scene(s)) for s in range(1, n + 1)])
    index, cal, _ = fitting.fit(train, fitting.FitConfig(), spec=emb.spec)
    return emb, index, cal


def test_full_view_keeps_the_aspect_and_rounds_to_the_stride() -> None:
    assert geometry.input_shape_for(1280, 720, 224) == (224, 384)
    assert geometry.input_shape_for(720, 1280, 224) == (384, 224)
    assert geometry.input_shape_for(640, 480, 224) == (224, 288)
    spec = BASE.resolved(W, H)
    assert spec.model_shape == (96, 160)
    assert Embedder(spec, device="cpu").preprocess(rgb(scene(1))).shape == (1, 3, 96, 160)


def test_an_intruder_in_the_side_band_is_seen_only_by_the_full_view() -> None:
    """The DN2 center crop drops a 16:9 frame's outer quarters; the full view scores them."""
    intruder = with_square(scene(50), x=8, y=80)  # wholly left of the center crop
    for view, expect_flag in (("full", True), ("center", False)):
        spec = dataclasses.replace(BASE, view=view, resize=110, crop=96)
        emb, index, cal = fit(spec)
        feats = emb.embed([rgb(scene(51)), rgb(intruder)])
        scores, maps = anomaly_maps.score_maps(index, feats, emb.spec)
        assert (scores[1] > max(cal.threshold, 1.5 * scores[0])) == expect_flag, (view, scores, cal.threshold)
        if view == "full":
            x0, y0, x1, y1 = anomaly_maps.hotspot(maps[1], emb.spec, W, H)
            assert x0 <= 20 and x1 <= W // 4 and y0 <= 92 <= y1, (x0, y0, x1, y1)
            assert anomaly_maps.map_region(emb.spec, W, H) == [0, 0, W, H]


def test_an_ignore_zone_is_never_scored_nor_the_hotspot() -> None:
    zone = (0.0, 0.0, 0.3, 0.25)  # a burned-in clock in the top-left corner
    spec = dataclasses.replace(BASE, zones=(zone,))
    emb, index, cal = fit(spec)
    clock = with_square(scene(60), x=10, y=5, side=30)  # changes only inside the zone
    elsewhere = with_square(scene(61), x=220, y=110)
    feats = emb.embed([rgb(scene(62)), rgb(clock), rgb(elsewhere)])
    scores, maps = anomaly_maps.score_maps(index, feats, emb.spec)
    assert scores[1] < cal.threshold * 1.05 and scores[1] < 1.2 * scores[0], (scores, cal.threshold)
    assert scores[2] > cal.threshold
    x0, y0, x1, y1 = anomaly_maps.hotspot(maps[1], emb.spec, W, H)
    assert not (x1 <= zone[2] * W and y1 <= zone[3] * H), "the hotspot lies in the ignored zone"
    # without the zone the same frame alarms: the zone is what silences it
    plain, pindex, pcal = fit(BASE)
    assert anomaly_maps.score_maps(pindex, plain.embed([rgb(clock)]), plain.spec)[0][0] > pcal.threshold


def test_patch_tiles_stitch_one_map_over_the_whole_frame() -> None:
    spec = dataclasses.replace(BASE, tiles=(2, 2), tile_overlap=0.1)
    emb, index, cal = fit(spec, n=6)
    intruder = with_square(scene(70), x=280, y=140, side=20)  # bottom-right tile
    feats = emb.embed([rgb(intruder)])
    assert feats.shape[0] == 1 and emb.spec.n_tiles == 4
    scores, maps = anomaly_maps.score_maps(index, feats, emb.spec)
    stitched, box = anomaly_maps.frame_map(maps[0], emb.spec, W, H)
    assert box == (0.0, 0.0, W, H)
    x0, y0, x1, y1 = anomaly_maps.hotspot(maps[0], emb.spec, W, H)
    assert x1 >= 280 and y1 >= 140 and x0 >= W // 2 and y0 >= H // 2, (x0, y0, x1, y1)
    assert scores[0] > cal.threshold


def test_specs_written_before_views_keep_their_fingerprint_and_center_crop() -> None:
    old = {"backbone": "resnet18", "weights": "IMAGENET1K_V1", "resize": 256, "crop": 224,
           "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "weights_sha256": "",
           "kind": "global", "layers": [], "proj_dim": 0, "proj_seed": 0}  # fmt: skip
    spec = EmbedderSpec.from_dict(old)
    assert spec.view == "center" and spec.to_dict() == old
    legacy = {k: v for k, v in old.items() if k not in ("kind", "layers", "proj_dim", "proj_seed")}
    blob = json.dumps(legacy, sort_keys=True).encode()
    assert spec.fingerprint() == hashlib.sha256(blob).hexdigest()[:16]  # how it was hashed before views
    assert spec.boxes(1280, 720) == [geometry.center_crop_box(1280, 720, 256, 224)]
    full = dataclasses.replace(spec, view="full")
    assert full.fingerprint() != spec.fingerprint()
    assert EmbedderSpec.from_dict(full.resolved(1280, 720).to_dict()).model_shape == (224, 384)


def test_zones_change_what_is_embedded_but_the_position_radius_does_not() -> None:
    zone = ((0.0, 0.0, 0.2, 0.1),)
    patch = BASE.resolved(W, H)
    assert dataclasses.replace(patch, zones=zone).fingerprint() != patch.fingerprint()
    assert dataclasses.replace(patch, position_radius=2).fingerprint() == patch.fingerprint()
    glob = dataclasses.replace(default_spec("resnet18", view="full"), weights="random:0").resolved(W, H)
    assert dataclasses.replace(glob, zones=zone).fingerprint() != glob.fingerprint()


def test_unreproducible_geometry_is_refused() -> None:
    good = BASE.to_dict()
    for bad in ({"view": "fisheye"}, {"tiles": [0, 2]}, {"zones": [[0.5, 0.1, 0.2, 0.3]]},
                {"view": "center", "tiles": [2, 2]}):  # fmt: skip
        with pytest.raises(SpecMismatch):
            EmbedderSpec.from_dict({**good, **bad})


def test_a_frame_of_another_aspect_is_scored_and_labelled_stretched() -> None:
    spec = BASE.resolved(W, H)
    assert not geometry.is_stretched(1920, 1080, spec.input_shape, spec.tiles, spec.tile_overlap)
    assert geometry.is_stretched(640, 480, spec.input_shape, spec.tiles, spec.tile_overlap)
    emb = Embedder(spec, device="cpu")
    assert emb.preprocess(rgb(scene(1, (200, 150)))).shape == (1, 3, 96, 160)  # resized all the same


def test_draft_decoding_keeps_the_input_resolution() -> None:
    spec = BASE.resolved(1280, 720)
    side = spec.draft_side((1280, 720))
    assert side >= 96 and side * 1280 / 720 >= 160
    assert dataclasses.replace(BASE, view="center", resize=110, crop=96).draft_side((1280, 720)) == 110


def test_global_tiles_are_each_compared_with_their_own_position_and_absorb_feedback() -> None:
    """Global tiles: the bottom-right tile of a frame is judged against bottom-right tiles only, and a
    frame marked normal stops alarming at its own tile positions."""
    from index_store.feedback import Mark, absorb
    from index_store.repository import IndexMeta

    spec = dataclasses.replace(default_spec("resnet18", view="full"), weights="random:0", input_size=64,
                               tiles=(2, 2), tile_overlap=0.1, regions=(1, 1))  # fmt: skip
    emb, index, cal = fit(spec)
    assert hasattr(index, "search_grid") and index.grid == (2, 2) and index.radius == 0
    intruder = with_square(scene(80), x=270, y=130, side=40)
    feats = emb.embed([rgb(scene(81)), rgb(intruder)])
    assert feats.shape == (2, 2, 2, 512)
    scores, maps = anomaly_maps.score_maps(index, feats, emb.spec)
    assert scores[1] > cal.threshold and int(np.argmax(maps[1])) == 3, maps[1]  # the bottom-right tile
    x0, y0, _x1, _y1 = anomaly_maps.hotspot(maps[1], emb.spec, W, H)
    assert x0 >= W // 3 and y0 >= H // 3
    meta = IndexMeta("yard", index.memory, index.k, 512, 1, emb.spec.to_dict(), threshold=cal.threshold)
    new_meta, new_index = absorb(meta, index, feats[1:], [Mark("f1", "ana")])
    assert new_meta.feedback["method"] == "positional-append"
    assert anomaly_maps.score_maps(new_index, feats[1:], emb.spec)[0][0] < 1e-3
    assert anomaly_maps.score_maps(new_index, feats[:1], emb.spec)[0][0] <= scores[0] + 1e-4


def test_a_whole_frame_global_index_pools_regions_and_finds_a_small_intruder_at_the_side() -> None:
    """The default whole-frame global index: one forward pass, the map pooled over 4x6 regions, each
    region judged against its own place; a small intruder at the far side of a 16:9 frame is flagged and
    the hotspot lies over it, while a one-vector (DN2) index of the same frames is moved less."""
    glob = dataclasses.replace(default_spec("resnet18", view="full"), weights="random:0", input_size=96)
    assert glob.regions == (4, 6) and glob.positional
    emb, index, cal = fit(glob, n=12)
    intruder = with_square(scene(80), x=W - 40, y=H // 2 - 12, side=28)  # the right-hand edge band
    feats = emb.embed([rgb(scene(81)), rgb(intruder)])
    assert feats.shape == (2, 4, 6, 512)
    assert np.allclose(np.linalg.norm(feats, axis=-1), 1.0, atol=1e-4)  # each region L2-normalised
    scores, maps = anomaly_maps.score_maps(index, feats, emb.spec)
    assert scores[0] <= cal.threshold < scores[1]
    assert np.unravel_index(int(np.argmax(maps[1])), maps[1].shape)[1] == 5, maps[1]  # the last column
    x0, _y0, _x1, _y1 = anomaly_maps.hotspot(maps[1], emb.spec, W, H)
    assert x0 >= W * 2 // 3
    one = dataclasses.replace(glob, regions=(1, 1))
    emb1, index1, cal1 = fit(one, n=12)
    s1 = fitting.score(index1, emb1.embed([rgb(scene(81)), rgb(intruder)]), emb1.spec)
    assert (s1[1] - s1[0]) / cal1.threshold < (scores[1] - scores[0]) / cal.threshold


def test_regions_are_recorded_only_when_used_and_need_a_whole_frame_global_index() -> None:
    one = dataclasses.replace(default_spec("resnet18", view="full"), weights="random:0", regions=(1, 1))
    assert "regions" not in one.to_dict()  # indexes fit before regions keep their fingerprint
    grid = dataclasses.replace(one, regions=(4, 6))
    assert grid.to_dict()["regions"] == [4, 6] and grid.fingerprint() != one.fingerprint()
    assert EmbedderSpec.from_dict(grid.to_dict()) == grid
    assert "regions 4x6" in grid.resolved(W, H).geometry_label()
    for bad in ({"regions": [0, 2]}, {"regions": [2, 2], "view": "center"}):
        with pytest.raises(SpecMismatch):
            EmbedderSpec.from_dict({**one.to_dict(), **bad})
    with pytest.raises(SpecMismatch):
        EmbedderSpec.from_dict({**BASE.to_dict(), "regions": [2, 2]})  # a patch index is already a grid


def test_a_frame_of_unknown_size_is_scored_as_full_not_stretched() -> None:
    """An extractor that decodes nothing (framewatch bench's null pipeline) gives no frame size."""
    from worker.scoring import frame_geometry

    spec = BASE.resolved(W, H)
    assert frame_geometry(spec, 0, 0) == "full"
    assert frame_geometry(spec, 640, 480) == "full/stretched"
