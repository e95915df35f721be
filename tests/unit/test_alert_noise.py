"""Which score records become alerts: de-dup, N of the last M, per-source cooldown (a clock passed in)."""

from __future__ import annotations

import pytest

from alerting.config import NoiseConfig
from alerting.noise import ALERT, COOLDOWN, DEBOUNCED, DUPLICATE, NORMAL, NoiseFilter
from wire.records import ScoreRecord


def rec(fid: str, source: str = "cam", anomaly: bool = True) -> ScoreRecord:
    return ScoreRecord(frame_id=fid, source=source, sequence=0, capture_time=0.0, score_time=0.0,
                       score=9.0 if anomaly else 1.0, threshold=5.0, is_anomaly=anomaly, index_name="idx",
                       index_version=1, backbone="resnet18", latency_s=0.1)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_frame_seen_twice_alerts_once():
    f = NoiseFilter(NoiseConfig(cooldown_s=0), Clock())
    assert f.decide(rec("a")).outcome == ALERT
    assert f.decide(rec("a")).outcome == DUPLICATE
    assert f.decide(rec("b")).outcome == ALERT


def test_cooldown_is_per_source_and_counts_what_it_held_back():
    clock = Clock()
    f = NoiseFilter(NoiseConfig(cooldown_s=60), clock)
    assert f.decide(rec("a1", "A")).outcome == ALERT
    assert f.decide(rec("b1", "B")).outcome == ALERT  # another source is not held back
    clock.t += 30
    assert f.decide(rec("a2", "A")).outcome == COOLDOWN
    assert f.decide(rec("a3", "A")).outcome == COOLDOWN
    clock.t += 31
    decision = f.decide(rec("a4", "A"))
    assert decision.outcome == ALERT and decision.suppressed == 2


def test_n_of_m_waits_for_enough_anomalous_frames_of_the_source():
    f = NoiseFilter(NoiseConfig(cooldown_s=0, need=2, window=3), Clock())
    assert f.decide(rec("1")).outcome == DEBOUNCED  # 1 of the last 1
    assert f.decide(rec("2", anomaly=False)).outcome == NORMAL
    assert f.decide(rec("3")).outcome == ALERT  # 2 of the last 3
    assert f.decide(rec("4", anomaly=False)).outcome == NORMAL
    assert f.decide(rec("5", anomaly=False)).outcome == NORMAL
    assert f.decide(rec("6")).outcome == DEBOUNCED  # 1 of the last 3 again


def test_impossible_n_of_m_is_refused():
    with pytest.raises(ValueError):
        NoiseConfig(need=3, window=2)
