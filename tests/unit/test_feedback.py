"""Marked-normal embeddings become a new index version (arrays in, arrays out)."""

from __future__ import annotations

import numpy as np
import pytest

from index_store.feedback import FeedbackError, Mark, absorb
from index_store.fitting import FitConfig, fit
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec

SPEC = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)
METHODS = {"exact": "append", "kmeans": "new-centres", "coreset": "new-vectors"}  # recorded in each version


def fitted(kind: str = "exact") -> tuple[IndexMeta, object, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 512)).astype(np.float32)
    sizes = {"kmeans": {"clusters": 5}, "coreset": {"coreset": 10}}.get(kind, {})
    index, cal, _ = fit(train, FitConfig(**sizes))
    meta = IndexMeta(name="cams", kind=index.memory, k=2, dim=512, n_vectors=index.size, spec=SPEC.to_dict(),
                     version=3, threshold=cal.threshold, calibration=cal.to_dict())  # fmt: skip
    return meta, index, train


@pytest.mark.parametrize("kind", ["exact", "kmeans", "coreset"])
def test_a_marked_false_alarm_scores_below_the_new_threshold_and_nothing_else_rises(kind):
    meta, index, train = fitted(kind)
    odd = np.full((1, 512), 3.0, np.float32)  # far from every training embedding
    assert index.score(odd)[0] > meta.threshold
    new_meta, new_index = absorb(meta, index, odd, [Mark("cam-7", "alice", "cam")])
    assert new_index.score(odd)[0] < new_meta.threshold
    assert np.all(new_index.score(train) <= index.score(train) + 1e-4)
    assert new_meta.feedback["absorbed"] == 1 and new_meta.feedback["by"] == {"alice": 1}
    assert new_meta.feedback["frames"] == ["cam-7"] and new_meta.feedback["base_version"] == 3
    assert new_meta.feedback["method"] == METHODS[kind]
    assert new_meta.kind == kind and new_meta.n_vectors == index.size + 2  # the marked frame, k = 2 times


@pytest.mark.parametrize("kind", ["kmeans", "coreset"])
def test_a_compressed_memory_keeps_its_threshold_and_says_why(kind):
    meta, index, _ = fitted(kind)
    new_meta, _ = absorb(meta, index, np.full((1, 512), 3.0, np.float32), [Mark("a", "bob")])
    assert new_meta.threshold == meta.threshold
    assert new_meta.calibration["method"] == meta.calibration["method"] == "split"
    assert "upper bound" in new_meta.calibration["threshold_kept"]


def test_exact_threshold_is_recalibrated_without_the_marked_frames_in_the_quantile():
    meta, index, _ = fitted()
    odd = np.full((2, 512), 3.0, np.float32)
    new_meta, _ = absorb(meta, index, odd, [Mark("a", "bob"), Mark("b", "10.0.0.9")])
    assert new_meta.calibration["method"] == "leave-one-out"
    assert new_meta.calibration["previous_threshold"] == meta.threshold
    assert new_meta.threshold <= meta.threshold * 1.001  # the far-away frames did not drag it up
    again, _ = absorb(
        new_meta, absorb(meta, index, odd, [Mark("a", "bob"), Mark("b", "c")])[1], odd[:1], [Mark("c", "bob")]
    )
    assert again.feedback["total_absorbed"] == 3 and again.feedback["n_fit_vectors"] == 60


def test_wrong_dimension_or_unknown_memory_kind_is_refused():
    meta, index, _ = fitted()
    with pytest.raises(FeedbackError):
        absorb(meta, index, np.zeros((1, 10), np.float32), [Mark("a", "bob")])
    with pytest.raises(FeedbackError, match="memory kind must be one of exact, kmeans, coreset, not 'patch'"):
        absorb(
            IndexMeta(**{**meta.__dict__, "kind": "patch"}),
            index,
            np.zeros((1, 512), np.float32),
            [Mark("a", "bob")],
        )


def test_metadata_from_a_newer_writer_still_reads():
    meta, _, _ = fitted()
    raw = meta.to_json().replace(b'{"calibration"', b'{"future_field": 1, "calibration"')
    assert IndexMeta.from_json(raw) == meta


@pytest.mark.parametrize("clusters", [None, 20])
def test_a_marked_patch_frame_scores_below_threshold_and_normal_frames_do_not_rise(clusters):
    from index_store.anomaly_maps import score_maps
    from index_store.knn import build_exact, build_kmeans

    spec = EmbedderSpec("resnet18", "random:0", resize=64, crop=64, kind="patch", layers=("layer2", "layer3"))
    rng = np.random.default_rng(1)
    scene = rng.normal(size=(1, 8, 8, spec.dim))  # one camera's view; its frames vary a little
    normal = (scene + 0.2 * rng.normal(size=(12, 8, 8, spec.dim))).astype(np.float32)  # 12 frames of 8x8 cells
    cells = normal.reshape(-1, spec.dim)
    index = build_exact(cells) if clusters is None else build_kmeans(cells, clusters)
    frame_scores, _ = score_maps(index, normal)
    threshold = float(frame_scores.max()) * 1.05
    meta = IndexMeta(name="bench", kind=index.memory, k=2, dim=spec.dim, n_vectors=index.size, spec=spec.to_dict(),
                     version=2, threshold=threshold)  # fmt: skip
    marked = normal[:1].copy()
    marked[0, 2:4, 5:7] += rng.normal(size=spec.dim) * 2.0  # a small region the index never saw: a false alarm
    assert score_maps(index, marked)[0][0] > threshold
    new_meta, new_index = absorb(meta, index, marked, [Mark("bench-9", "bob")])
    assert score_maps(new_index, marked)[0][0] < new_meta.threshold == threshold
    assert np.all(score_maps(new_index, normal)[0] <= frame_scores + 1e-4)
    assert new_meta.feedback["method"] == "patch-coreset"
    assert new_index.size - index.size <= 2 * 64 // 4  # the flagged region (and a margin) taught, not the frame
