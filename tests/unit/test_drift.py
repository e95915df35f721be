"""Per-camera alarm rate and drift (worker/drift.py) and their metrics: plain values, a fake clock, no services."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from index_store.fitting import FitConfig, fit, score_sketch, threshold_at
from worker.drift import ALARM_RATIO_ALERT, DRIFT_ALERT, DriftConfig, DriftTracker, Reference
from worker.metrics import drift_metrics

TARGET = 0.01


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def calibrated(rng: np.random.Generator, n: int = 1000, shape: float = 16.0) -> tuple[Reference, float]:
    """A reference as a fit stores it, from ``n`` normal scores; and the threshold."""
    scores = rng.gamma(shape, 1.0, n)
    threshold = threshold_at(scores, TARGET)
    cal = {
        "target_fpr": TARGET,
        "threshold": threshold,
        "n_scores": n,
        "score_quantiles": score_sketch(scores),
    }
    return Reference.from_calibration(cal, threshold), threshold


def rule_for_s(alert: str) -> float:
    """The ``for`` of an alert in deploy/prometheus/rules.yml, in seconds."""
    import re
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).parents[2] / "deploy/prometheus/rules.yml").read_text())
    rule = next(r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert)
    return sum(
        float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in re.findall(r"(\d+)([hms])", rule["for"])
    )


def held(series: list[tuple[float, float]], limit: float, for_s: float) -> float:
    """First time ``value > limit`` has held for ``for_s`` (a Prometheus rule's ``for``); inf if never."""
    since = None
    for t, value in series:
        since = (since if since is not None else t) if value > limit else None
        if since is not None and t - since >= for_s:
            return t
    return float("inf")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_upward_drift_shows_in_drift_and_alarm_rate_before_the_alarm_rate_passes_five_times_target(seed):
    """A scene brightening over 2,000 frames (1 frame/s): scores creep up 50%."""
    rng = np.random.default_rng(seed)
    ref, threshold = calibrated(rng)
    clock = Clock()
    tracker = DriftTracker(DriftConfig(window_s=600), clock)
    drift, ratio = [], []
    for i in range(3000):
        clock.t = float(i)
        factor = 1.0 + 0.5 * min(1.0, max(0.0, i - 600) / 2000)
        tracker.observe("cam-3", rng.gamma(16.0, 1.0) * factor / threshold, "yard@1", ref)
        if i >= 100 and i % 15 == 0:  # a scrape every 15 s
            (d,) = tracker.snapshot()
            drift.append((clock.t, d.drift))
            ratio.append((clock.t, d.alarm_ratio))
    stable = [v for t, v in drift if t < 600]
    assert max(stable) < DRIFT_ALERT, "no drift alert while the scene is as calibrated"
    assert max(v for t, v in ratio if t < 600) < ALARM_RATIO_ALERT
    five_times = next(t for t, v in ratio if v > 5)
    drift_fires = held(drift, DRIFT_ALERT, rule_for_s("FramewatchCameraDrift"))
    assert drift_fires < five_times
    at_drift = dict(ratio)[drift_fires]
    assert at_drift > 1.0, "the alarm rate is already rising when drift fires"
    assert max(v for t, v in drift) > 3 * max(stable)


def test_a_stream_as_calibrated_stays_near_target_with_low_drift():
    rng = np.random.default_rng(7)
    ref, threshold = calibrated(rng)
    clock = Clock()
    tracker = DriftTracker(DriftConfig(window_s=600, max_frames=1000), clock)
    for i in range(1000):
        clock.t = i * 0.6
        tracker.observe("cam-1", rng.gamma(16.0, 1.0) / threshold, "yard@1", ref)
    (d,) = tracker.snapshot()
    assert d.frames == 1000 and d.reference == "sketch"
    assert d.drift is not None and d.drift < DRIFT_ALERT
    assert 0.0 < d.alarm_rate < 3 * TARGET and d.target_fpr == TARGET


def test_a_fitted_index_stores_the_sketch_drift_is_measured_against():
    rng = np.random.default_rng(1)
    _, cal, _ = fit(rng.normal(size=(60, 8)).astype(np.float32), FitConfig(target_fpr=0.05))
    stored = cal.to_dict()
    sketch = stored["score_quantiles"]
    assert len(sketch["p"]) == len(sketch["score"]) and sketch["score"] == sorted(sketch["score"])
    ref = Reference.from_calibration(stored, cal.threshold)
    assert ref.kind == "sketch" and ref.target_fpr == 0.05 and ref.n_scores == cal.n_scores
    assert (1.0, 0.95) in ref.points  # the threshold is the (1 - target) quantile


def test_older_indexes_fall_back_to_their_summary_or_the_threshold_alone():
    summary = {"target_fpr": 0.02, "threshold": 10.0, "n_scores": 500, "score_p50": 5.0, "score_p99": 9.0}
    ref = Reference.from_calibration(summary, 10.0)
    assert ref.kind == "summary" and ref.points == ((0.5, 0.5), (0.9, 0.99), (1.0, 0.98))
    bare = Reference.from_calibration({}, 3.0)  # a hand-published index: no calibration at all
    assert bare.kind == "threshold" and bare.target_fpr == 0.01 and bare.points == ((1.0, 0.99),)
    clock = Clock()
    tracker = DriftTracker(DriftConfig(min_frames=30), clock)
    for i in range(200):  # every 10th frame over the threshold: 10x target
        tracker.observe("old", 1.5 if i % 10 == 0 else 0.5, "old@1", bare)
        tracker.observe("sum", 0.6, "sum@1", ref)  # all above the median: far from the summary
    by_source = {d.source: d for d in tracker.snapshot()}
    assert by_source["old"].alarm_ratio == pytest.approx(10.0) and by_source["old"].drift > DRIFT_ALERT
    assert by_source["sum"].alarm_rate == 0.0 and by_source["sum"].drift > DRIFT_ALERT


def test_sources_age_out_and_a_new_index_version_restarts_the_window():
    clock = Clock()
    tracker = DriftTracker(DriftConfig(window_s=60, min_frames=5), clock)
    ref = Reference.from_calibration({}, 1.0)
    for i in range(10):
        clock.t = float(i)
        tracker.observe("a", 2.0, "idx@1", ref)
        tracker.observe("b", 0.5, "idx@1", ref)
    clock.t = 30.0
    tracker.observe("a", 0.5, "idx@2", ref)  # recalibrated: the old threshold's alarms no longer count
    a = next(d for d in tracker.snapshot() if d.source == "a")
    assert (a.index, a.frames, a.alarm_rate) == ("idx@2", 1, 0.0)
    clock.t = 75.0  # b unseen for over a minute
    assert [d.source for d in tracker.snapshot()] == ["a"]
    clock.t = 95.0
    assert tracker.snapshot() == []


def scrape(registry: CollectorRegistry) -> dict[str, dict[str, float]]:
    """{metric name: {source label (or "") : value}} of the drift families."""
    out: dict[str, dict[str, float]] = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, {})[s.labels.get("source", s.labels.get("le", ""))] = s.value
    return out


def test_labels_are_bounded_worst_first_and_removed_when_a_source_ages_out():
    clock = Clock()
    tracker = DriftTracker(DriftConfig(window_s=60, min_frames=10, labelled=3), clock)
    registry = CollectorRegistry()
    drift_metrics(registry, tracker)
    ref = Reference.from_calibration({}, 1.0)
    for i in range(100):
        clock.t = i * 0.5
        for cam in range(10):
            over = cam == 7 and i % 5 == 0  # cam-7 alarms on 20% of frames
            tracker.observe(f"cam-{cam}", 1.2 if over else 0.5, "idx@1", ref)
    metrics = scrape(registry)
    rates = metrics["framewatch_source_alarm_rate"]
    assert len(rates) == 3 and rates["cam-7"] == pytest.approx(0.2)
    assert metrics["framewatch_source_target_fpr"]["cam-7"] == 0.01
    assert metrics["framewatch_source_window_frames"]["cam-7"] == 100
    assert metrics["framewatch_drift_sources"][""] == 10
    assert metrics["framewatch_sources_by_alarm_ratio_bucket"]["+Inf"] == 10
    assert metrics["framewatch_sources_by_alarm_ratio_bucket"]["10.0"] == 9  # all but cam-7 (20x target)
    assert set(rates) == set(scrape(registry)["framewatch_source_alarm_rate"]), "labels do not flap"
    clock.t = 120.0  # only cam-1 keeps sending
    tracker.observe("cam-1", 0.5, "idx@1", ref)
    metrics = scrape(registry)
    assert set(metrics["framewatch_source_alarm_rate"]) == {"cam-1"}
    assert "cam-7" not in generate_latest(registry).decode()
