"""Choosing a camera's training frames (pure): sampling across the period, near-duplicate removal,
held-out rows, and recalibration's threshold and alarm rates."""

from __future__ import annotations

import numpy as np
import pytest

from index_store import stream_sample
from index_store.fitting import FitConfig
from index_store.recalibration import recalibrate
from index_store.repository import IndexMeta
from index_store.stream_fit import fit_stream


def test_pick_spreads_over_the_whole_period():
    rows = stream_sample.pick(10_000, max_frames=100)
    assert len(rows) == 100 and rows[0] == 0 and rows[-1] == 9_999
    assert np.ptp(np.diff(rows)) <= 1  # evenly spaced: no hour of the period left out
    assert list(stream_sample.pick(10, every=3)) == [0, 3, 6, 9]
    assert len(stream_sample.pick(1000, every=2, max_frames=50)) == 50
    assert list(stream_sample.pick(5, max_frames=100)) == [0, 1, 2, 3, 4]


def test_dedup_collapses_a_static_stretch_and_keeps_varied_frames():
    rng = np.random.default_rng(0)
    varied = rng.normal(size=(40, 16))
    static = varied[7] + rng.normal(
        scale=0.01, size=(200, 16)
    )  # a scene that does not move, with sensor noise
    feats = np.concatenate([varied[:20], static, varied[20:]]).astype(np.float32)
    kept = stream_sample.dedup(feats, 0.02)
    assert len(kept) <= 41 and set(range(20)) <= set(kept)  # the static 200 become at most one more
    assert set(range(220, 240)) <= set(kept)
    assert len(stream_sample.dedup(feats, 0.0)) == len(feats)


def test_holdout_rows_interleave_and_leave_enough_to_train():
    assert list(stream_sample.holdout_rows(12)) == [2, 7]
    assert len(stream_sample.holdout_rows(3)) == 0


def test_cleaning_keeps_contamination_out_of_training_and_calibration():
    rng = np.random.default_rng(1)
    normal = rng.normal(size=(90, 8))
    anomalies = rng.normal(size=(10, 8)) + rng.uniform(-8, 8, size=(10, 8))  # each unlike the others
    feats = np.concatenate([normal, anomalies]).astype(np.float32)
    order = rng.permutation(100)
    origins = [f"kafka://f/0/{i}" for i in range(100)]
    cfg = FitConfig(clean_fraction=0.2)
    fit = fit_stream("cam", feats[order], [origins[i] for i in order], {}, cfg, dedup_factor=0)
    kept = {int(o.rsplit("/", 1)[1]) for o in fit.meta.origins}
    assert not kept & set(range(90, 100))  # no anomaly trained on
    assert fit.counts["held_out"] == 20 and fit.counts["train"] == 64  # 80 left for training, 20 % cleaned
    held_anomalies = len([i for i in order[stream_sample.holdout_rows(100)] if i >= 90])
    assert held_anomalies and fit.counts["holdout"] == 20 - held_anomalies  # nor calibrated on


def test_recalibrate_sets_the_quantile_without_the_confirmed_frames():
    meta = IndexMeta(name="cam", kind="exact", k=2, dim=2, n_vectors=1, spec={}, version=4, threshold=1.0,
                     calibration={"target_fpr": 0.1})  # fmt: skip
    scores = np.concatenate([np.linspace(1.0, 2.0, 99), [50.0]])
    confirmed = np.zeros(100, dtype=bool)
    confirmed[-1] = True
    result = recalibrate(meta, scores, confirmed)
    assert result.left_out == 1 and result.meta.calibration["n_scores"] == 99
    assert result.rate_before == pytest.approx(98 / 99)
    assert result.rate_after <= 0.1 and result.meta.threshold < 2.0
    assert result.meta.calibration["previous_version"] == 4 and result.meta.version == 0


def test_a_recalibrated_version_gives_workers_the_full_sketch_to_measure_drift_against():
    """Without it, `status` listed REF `summary` (3 points) after a recalibration, and the runbook said to refit."""
    from worker.drift import DRIFT_ALERT, DriftTracker, Reference

    rng = np.random.default_rng(3)
    meta = IndexMeta(name="cam", kind="exact", k=2, dim=2, n_vectors=1, spec={}, version=2, threshold=10.0,
                     calibration={"target_fpr": 0.01})  # fmt: skip
    recent = rng.gamma(16.0, 2.0, 400)  # the scene after the change: every frame over the old threshold
    result = recalibrate(meta, recent, np.zeros(400, dtype=bool))
    ref = Reference.from_calibration(result.meta.calibration, result.meta.threshold)
    assert ref.kind == "sketch" and len(ref.points) > 10
    tracker = DriftTracker()
    for score in rng.gamma(16.0, 2.0, 600):  # later frames of the same scene
        tracker.observe("cam", float(score) / result.meta.threshold, "cam@3", ref)
    (d,) = tracker.snapshot()
    assert d.reference == "sketch" and d.drift is not None and d.drift < DRIFT_ALERT and d.alarm_rate < 0.03
