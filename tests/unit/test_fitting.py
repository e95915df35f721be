"""DN2 fitting on synthetic embeddings: cleaning, calibration, window scoring, exact vs k-means."""

from __future__ import annotations

import numpy as np
import pytest

from index_store import fitting, knn


def test_clean_removes_planted_outliers() -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(size=(300, 16))
    outliers = rng.normal(size=(15, 16)) * 0.5 + 12.0 * rng.choice([-1, 1], size=(15, 16))
    train = np.concatenate([normal, outliers]).astype(np.float32)
    is_outlier = np.r_[np.zeros(300, bool), np.ones(15, bool)]
    perm = rng.permutation(len(train))
    train, is_outlier = train[perm], is_outlier[perm]

    kept = knn.clean(train, 15 / len(train))
    assert not is_outlier[kept].any()
    assert len(kept) == 300
    # the paper's 50% also drops every outlier, keeping half the normal set
    kept_half = knn.clean(train, 0.5)
    assert not is_outlier[kept_half].any()


def test_fit_with_cleaning_reports_kept_indices() -> None:
    rng = np.random.default_rng(1)
    scattered = 30.0 * rng.choice([-1, 1], size=(5, 8))  # far away, and far from each other
    train = np.concatenate([rng.normal(size=(100, 8)), scattered]).astype(np.float32)
    index, _, kept = fitting.fit(train, fitting.FitConfig(clean_fraction=0.05))
    assert set(kept.tolist()) == set(range(100))
    assert index.size == 100


@pytest.mark.parametrize("clusters", [None, 10])
def test_calibration_hits_target_false_alarm_rate(clusters: int | None) -> None:
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(5, 8)) * 4

    def normal(n: int) -> np.ndarray:
        return (centres[rng.integers(0, 5, n)] + rng.normal(size=(n, 8))).astype(np.float32)

    target = 0.05
    index, cal, _ = fitting.fit(normal(3000), fitting.FitConfig(clusters=clusters, target_fpr=target))
    fresh = index.score(normal(20000))
    false_alarms = float((fresh > cal.threshold).mean())
    assert abs(false_alarms - target) < 0.02, (cal.method, false_alarms)


def test_window_of_mixed_sources_scores_higher_than_normal_windows() -> None:
    """Every frame is normal on its own; the combination of two cameras' scenes in one window is not."""
    rng = np.random.default_rng(3)
    dim, window = 32, 8
    states = {src: rng.normal(size=(2, dim)) * 5 for src in "AB"}  # two normal states per source

    def frames(src: str, n: int) -> np.ndarray:
        return states[src][rng.integers(0, 2, n)] + rng.normal(size=(n, dim)) * 0.5

    def window_of(src: str) -> np.ndarray:
        return frames(src, window)

    normal_windows = [window_of(s) for s in "AB" for _ in range(200)]
    window_index = knn.build_exact(np.stack([w.mean(axis=0) for w in normal_windows]))
    frame_index = knn.build_exact(np.concatenate(normal_windows))

    mixed = np.concatenate([frames("A", window // 2), frames("B", window // 2)])
    held_out = [window_of(s) for s in "AB" for _ in range(50)]
    normal_scores = [window_index.score_window(w) for w in held_out]
    normal_frame_scores = frame_index.score(np.concatenate(held_out))

    # frame by frame the mixed window looks normal ...
    assert frame_index.score(mixed).max() <= np.quantile(normal_frame_scores, 0.999)
    # ... but as a group it is far from every normal window
    assert window_index.score_window(mixed) > 3 * max(normal_scores)


def test_exact_score_equals_brute_force() -> None:
    rng = np.random.default_rng(4)
    train = rng.normal(size=(500, 24)).astype(np.float32)
    queries = rng.normal(size=(50, 24)).astype(np.float32)
    for k in (1, 2, 5):
        sq = ((queries[:, None, :].astype(np.float64) - train[None, :, :]) ** 2).sum(-1)
        expected = np.sort(sq, axis=1)[:, :k].mean(axis=1)
        got = knn.build_exact(train, k).score(queries)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_kmeans_with_one_centre_per_point_ranks_as_exact() -> None:
    rng = np.random.default_rng(5)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    queries = rng.normal(size=(100, 16)).astype(np.float32) * rng.uniform(0.5, 2, size=(100, 1)).astype(
        np.float32
    )
    exact = knn.build_exact(train, 2).score(queries)
    km = fitting.build(train, fitting.FitConfig(clusters=len(train), k=2))
    assert km.memory == "kmeans" and km.size == len(train)
    np.testing.assert_array_equal(
        np.argsort(km.score(queries), kind="stable"), np.argsort(exact, kind="stable")
    )


def test_fewer_centres_still_separate_far_queries() -> None:
    rng = np.random.default_rng(6)
    train = rng.normal(size=(500, 16)).astype(np.float32)
    near, far = rng.normal(size=(50, 16)), rng.normal(size=(50, 16)) + 6
    for c in (1, 3, 10):
        index = knn.build_kmeans(train, c)
        assert index.size == c
        assert index.score(near).max() < index.score(far).min()


@pytest.mark.parametrize(
    "kw", [{"k": 0}, {"clean_fraction": 1.5}, {"target_fpr": 2.0}, {"clusters": -1}, {"clusters": 5, "coreset": 5}]
)
def test_bad_fit_settings_are_refused_when_made(kw):
    from index_store.fitting import FitConfig, FitError

    with pytest.raises(FitError):
        FitConfig(**kw)


def test_one_image_cannot_calibrate_a_threshold_and_says_so():
    from index_store.fitting import FitConfig, FitError, fit

    with pytest.raises(FitError, match="at least k \\+ 1 = 3"):
        fit(np.ones((1, 8), np.float32), FitConfig())
    index, cal, _ = fit(np.ones((1, 8), np.float32), FitConfig(), holdout=np.zeros((4, 8), np.float32))
    assert cal.method == "holdout" and cal.threshold > 0
