"""Position-aware patch memory: an ordinary object where it never stands is anomalous, shake within the
radius is not, compressed memories keep the ranking, and the stored form round-trips (no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.evaluate import roc_auc
from index_store import anomaly_maps, positional
from index_store.positional import PositionalError, PositionalMemory, build_positional

H, W, D, T = 8, 12, 16, 30
CRATE_HOME = ((2, 3), (2, 4))  # where the crate always stands in training
CRATE_AWAY = ((5, 8), (5, 9))  # where it never stands (the doorway)
EVERYWHERE = 10**6  # a radius that covers the grid: the location-free memory


class Scene:
    """Synthetic patch grids of a fixed camera: a distinct background vector per cell (a padded field,
    so the view can shake by a cell), a crate vector at its usual cells, per-frame sensor noise."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.field = rng.standard_normal((H + 2, W + 2, D)).astype(np.float32)
        self.crate = 2.0 * rng.standard_normal(D).astype(np.float32)
        self.rng = np.random.default_rng(seed + 1)

    def frames(self, n: int, shift: tuple[int, int] = (0, 0), crate_at=CRATE_HOME) -> np.ndarray:
        dr, dc = shift
        out = np.repeat(self.field[None, 1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W], n, axis=0).copy()
        for r, c in CRATE_HOME + tuple(crate_at):
            out[:, r - dr, c - dc] = self.crate  # the crate shakes with the scene
        return out + 0.3 * self.rng.standard_normal(out.shape).astype(np.float32)


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


@pytest.fixture(scope="module")
def train(scene: Scene) -> np.ndarray:
    return scene.frames(T)


def position_case(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """20 normal test frames, then 20 with a second crate where none ever stood; labels."""
    frames = np.concatenate([scene.frames(20), scene.frames(20, crate_at=CRATE_AWAY)])
    return frames, np.r_[np.zeros(20), np.ones(20)]


def frame_scores(memory: PositionalMemory, maps: np.ndarray) -> np.ndarray:
    return memory.search_grid(maps).reshape(len(maps), -1).max(axis=1)


MEMORIES = (("exact", 0), ("kmeans", 4), ("coreset", 4))


@pytest.mark.parametrize(("kind", "per_cell"), MEMORIES)
def test_an_object_where_it_never_stands_is_anomalous_only_with_a_small_radius(
    scene: Scene, train: np.ndarray, kind: str, per_cell: int
) -> None:
    frames, labels = position_case(scene)
    near = build_positional(train, radius=1, memory=kind, per_cell=per_cell)
    anywhere = build_positional(train, radius=EVERYWHERE, memory=kind, per_cell=per_cell)
    assert roc_auc(labels, frame_scores(near, frames)) == 1.0
    assert roc_auc(labels, frame_scores(anywhere, frames)) < 0.8  # the crate is a normal sight somewhere
    maps = near.search_grid(frames[20:21])[0]
    assert np.unravel_index(int(np.argmax(maps)), maps.shape) in CRATE_AWAY


def test_compressed_memories_rank_the_position_case_like_exact(scene: Scene, train: np.ndarray) -> None:
    frames, labels = position_case(scene)
    ranks = {}
    for kind, per_cell in MEMORIES:
        scores = frame_scores(build_positional(train, 1, kind, per_cell), frames)
        ranks[kind] = np.argsort(np.argsort(scores))
    for kind in ("kmeans", "coreset"):
        rho = np.corrcoef(ranks["exact"], ranks[kind])[0, 1]  # Spearman
        assert rho > 0.8, (kind, rho)


def test_camera_shake_within_the_radius_is_tolerated(scene: Scene, train: np.ndarray) -> None:
    normal, shaken = scene.frames(10), scene.frames(10, shift=(0, 1))
    interior = (slice(None), slice(1, -1), slice(1, -1))  # cells whose content stays in view
    for kind, per_cell in MEMORIES:
        still = build_positional(train, 0, kind, per_cell)
        tolerant = build_positional(train, 1, kind, per_cell)
        normal_top = still.search_grid(normal)[interior].max()
        assert still.search_grid(shaken)[interior].max(axis=(1, 2)).min() > 3 * normal_top, kind
        assert tolerant.search_grid(shaken)[interior].max() < 1.5 * tolerant.search_grid(normal).max(), kind


def reference(memory: PositionalMemory, maps: np.ndarray) -> np.ndarray:
    """Slow, literal rule: each query cell against every stored vector within Chebyshev radius R."""
    vectors, meta = memory.to_arrays()
    h, w = meta["grid"]
    cells = vectors.reshape(h, w, meta["per_cell"], meta["dim"]).astype(np.float64)
    windows = {
        (r, c): cells[
            max(0, r - memory.radius) : r + memory.radius + 1,
            max(0, c - memory.radius) : c + memory.radius + 1,
        ].reshape(-1, meta["dim"])
        for r in range(h)
        for c in range(w)
    }
    k = min(memory.k, min(len(v) for v in windows.values()))
    out = np.zeros(maps.shape[:3])
    for i in range(maps.shape[0]):
        for (r, c), cand in windows.items():
            nearest = np.sort(((cand - maps[i, r, c].astype(np.float64)) ** 2).sum(axis=1))[:k]
            out[i, r, c] = nearest.sum() if memory.memory == "kmeans" else nearest.mean()
    return out


@pytest.mark.parametrize("radius", [0, 1, 2, 6, EVERYWHERE])
@pytest.mark.parametrize(
    ("kind", "per_cell", "k"), [("exact", 0, 2), ("exact", 0, 3), ("kmeans", 3, 2), ("coreset", 2, 3)]
)
def test_search_grid_equals_the_literal_rule(radius: int, kind: str, per_cell: int, k: int) -> None:
    rng = np.random.default_rng(radius + k)
    train = rng.standard_normal((6, 5, 7, 8)).astype(np.float32)
    queries = rng.standard_normal((3, 5, 7, 8)).astype(np.float32)
    memory = build_positional(train, radius, kind, per_cell, k=k)
    np.testing.assert_allclose(memory.search_grid(queries), reference(memory, queries), rtol=1e-4, atol=1e-4)


def test_exact_memory_keeps_every_training_vector_at_its_cell(train: np.ndarray) -> None:
    vectors, meta = build_positional(train, 1).to_arrays()
    assert meta["per_cell"] == T and vectors.shape == (H * W * T, D)
    np.testing.assert_array_equal(vectors.reshape(H, W, T, D)[3, 5], train[:, 3, 5])


def test_a_search_in_small_steps_gives_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    train = rng.standard_normal((10, 9, 11, 8)).astype(np.float32)
    queries = rng.standard_normal((4, 9, 11, 8)).astype(np.float32)
    memory = build_positional(train, 2, "exact")
    whole = memory.search_grid(queries)
    monkeypatch.setattr(positional, "WORK_BYTES", 9 * 11 * (8 + 10) * 4 * 3)  # 3 offsets of one frame a step
    np.testing.assert_allclose(memory.search_grid(queries), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kind", "per_cell"), MEMORIES)
def test_round_trip_through_raw_little_endian_bytes_and_json(
    scene: Scene, train: np.ndarray, kind: str, per_cell: int
) -> None:
    memory = build_positional(train, 1, kind, per_cell, k=3)
    vectors, meta = memory.to_arrays()
    raw, text = np.ascontiguousarray(vectors, dtype="<f4").tobytes(), json.dumps(meta)
    back = PositionalMemory.from_arrays(np.frombuffer(raw, dtype="<f4").reshape(-1, D), json.loads(text))
    assert (back.memory, back.k, back.radius, back.grid, back.per_cell) == (kind, 3, 1, (H, W), memory.per_cell)
    frames = scene.frames(3, crate_at=CRATE_AWAY)
    np.testing.assert_array_equal(back.search_grid(frames), memory.search_grid(frames))
    with pytest.raises(PositionalError, match="do not match"):
        PositionalMemory.from_arrays(vectors[:-1], meta)
    with pytest.raises(PositionalError, match="format"):
        PositionalMemory.from_arrays(vectors, {**meta, "format": "knn"})


def test_it_scores_maps_wherever_a_knn_index_does(scene: Scene, train: np.ndarray) -> None:
    memory = build_positional(train, 1)
    frames = scene.frames(4, crate_at=CRATE_AWAY)
    scores, maps = anomaly_maps.score_maps(memory, frames)
    np.testing.assert_array_equal(maps, memory.search_grid(frames))
    np.testing.assert_array_equal(scores, maps.reshape(4, -1).max(axis=1))


def test_features_of_another_grid_or_bad_settings_get_a_clear_error(train: np.ndarray) -> None:
    memory = build_positional(train, 1)
    with pytest.raises(PositionalError, match=rf"expected \(n, {H}, {W}, {D}\)"):
        memory.search_grid(np.zeros((1, H, W + 2, D), np.float32))
    with pytest.raises(ValueError, match="T, h, w, D"):  # a ValueError too, for callers that catch those
        build_positional(train[0], 1)
    with pytest.raises(PositionalError, match="per_cell of at least 1"):
        build_positional(train, 1, "kmeans")
    with pytest.raises(PositionalError, match="radius"):
        build_positional(train, -1)
    with pytest.raises(PositionalError, match="kind"):
        build_positional(train, 1, "lsh", 4)


@pytest.mark.parametrize("kind,per_cell", [("exact", 0), ("kmeans", 3), ("coreset", 3)])
def test_it_names_the_training_frames_nearest_at_a_cell_and_keeps_them_in_storage(
    train: np.ndarray, kind: str, per_cell: int
) -> None:
    """What `explain` shows for a global region index: the frames whose region looked most like this one.
    A copy of training frame 2 names frame 2 (exact, coreset: its own vector; k-means: a centre's nearest)."""
    memory = build_positional(train, 0, kind, per_cell)
    query = train[2]
    first = memory.nearest_frames(query[0, 0], (0, 0), 2)
    assert 1 <= len(first) <= 2 and all(0 <= f < len(train) for f in first)
    if kind != "kmeans":
        assert first[0] == 2 or kind == "coreset" and memory.rows is not None and 2 not in memory.rows[0, 0]
    vectors, meta = memory.to_arrays()
    back = PositionalMemory.from_arrays(vectors, json.loads(json.dumps(meta)))
    assert back.nearest_frames(query[0, 0], (0, 0), 2) == first
    if memory.rows is not None:  # malformed rows from Redis are refused, not trusted
        for bad in (meta["rows"][:-1], [0.5] * len(meta["rows"]), [-2] * len(meta["rows"])):
            with pytest.raises(PositionalError):
                PositionalMemory.from_arrays(vectors, {**meta, "rows": bad})


def test_feedback_vectors_name_no_frame(train: np.ndarray) -> None:
    from index_store.feedback import absorb_positional
    from index_store.repository import IndexMeta

    memory = build_positional(train, 0)
    meta = IndexMeta("cam", "exact", 2, D, memory.per_cell * H * W, {}, threshold=1.0)
    grown = absorb_positional(meta, memory, train[:1] + 0.5).index
    assert grown.per_cell == memory.per_cell + 2 and grown.rows is not None
    assert (grown.rows[..., memory.per_cell :] == -1).all()
    query = train[0, 0, 0] + 0.5  # the marked copies are nearest, but name no frame: the frames are as before
    assert grown.nearest_frames(query, (0, 0), 2) == memory.nearest_frames(query, (0, 0), 2)
