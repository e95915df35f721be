"""Incidents from score records (pure: records, noise decisions and a clock in, events out)."""

from __future__ import annotations

from alerting.config import IncidentConfig, NoiseConfig
from alerting.incidents import CLOSE, INTRUSION, OPEN, SCENE_CHANGE, UPDATE, IncidentTracker
from alerting.noise import NoiseFilter
from wire.anomaly_map import encode_map
from wire.records import ScoreRecord


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rec(i: int, anomaly: bool, t: float, score: float = 0.0, cover: float | None = None) -> ScoreRecord:
    amap = None
    if cover is not None:  # a 10x10 map with the first `cover` share of cells over the threshold
        amap = encode_map([[9.0 if r * 10 + c < cover * 100 else 1.0 for c in range(10)] for r in range(10)])
    return ScoreRecord(frame_id=f"f{i}", source="cam", sequence=i, capture_time=t, score_time=t,
                       score=score or (9.0 if anomaly else 1.0), threshold=5.0, is_anomaly=anomaly, index_name="idx",
                       index_version=1, backbone="resnet18", latency_s=0.1, frame_topic="frames", frame_partition=0,
                       frame_offset=i, anomaly_map=amap, hotspot=[1, 2, 3, 4] if anomaly else None)  # fmt: skip


def feed(
    tracker: IncidentTracker, noise: NoiseFilter, clock: Clock, records: list[ScoreRecord], dt: float = 0.1
):  # type: ignore[no-untyped-def]
    events = []
    for r in records:
        clock.t += dt
        events += tracker.observe(r, noise.decide(r).outcome)
        events += tracker.tick()
    return events


def test_an_intruder_crossing_for_40_frames_is_one_incident_opened_and_closed_once():
    clock, cfg = Clock(), IncidentConfig(close_after_s=3.0, update_every_s=0)
    tracker, noise = (
        IncidentTracker(cfg, clock),
        NoiseFilter(NoiseConfig(cooldown_s=300, need=3, window=5), clock),
    )
    t = [100.0 + 0.1 * i for i in range(80)]
    crossing = [rec(i, anomaly=(20 <= i < 60 and i != 40), t=t[i], score=9.0 + (i == 45)) for i in range(80)]
    events = feed(tracker, noise, clock, crossing)
    events += feed(
        tracker, noise, clock, [rec(100, False, 110.0)]
    )  # a normal frame 4 s after the last anomaly
    assert [e.state for e in events] == [OPEN, CLOSE]
    opened, closed = (e.incident for e in events)
    assert opened["id"] == closed["id"] and closed["kind"] == INTRUSION
    assert opened["start"] == t[22]  # the third anomalous frame passes 3 of the last 5
    assert closed["end"] == t[59] and closed["count"] == 37  # frames 22..59 but 40
    assert closed["peak_score"] == 10.0 and closed["peak_frame"]["frame_id"] == "f45"
    assert closed["peak_frame"]["offset"] == 45 and closed["peak_frame"]["hotspot"] == [1, 2, 3, 4]


def test_a_silent_source_closes_by_wall_time():
    clock = Clock()
    tracker = IncidentTracker(IncidentConfig(close_after_s=5.0), clock)
    assert [e.state for e in tracker.observe(rec(0, True, 1.0), "alert")] == [OPEN]
    clock.t += 4.9
    assert tracker.tick() == []
    clock.t += 0.2
    assert [e.state for e in tracker.tick()] == [CLOSE]


def test_a_camera_turned_away_is_one_scene_change_not_hundreds_of_alerts():
    clock, cfg = Clock(), IncidentConfig(close_after_s=3.0, update_every_s=0, scene_after_s=10.0)
    tracker, noise = IncidentTracker(cfg, clock), NoiseFilter(NoiseConfig(cooldown_s=0), clock)
    turned = [rec(i, True, 100.0 + 0.2 * i, cover=0.9) for i in range(200)]
    events = feed(tracker, noise, clock, turned) + feed(tracker, noise, clock, [rec(300, False, 200.0)])
    assert [(e.state, e.incident["kind"]) for e in events] == [(OPEN, INTRUSION), (UPDATE, SCENE_CHANGE),
                                                              (CLOSE, SCENE_CHANGE)]  # fmt: skip
    assert all(e.notify for e in events) and "check the camera" in events[-1].text()


def test_a_lingering_local_anomaly_stays_an_intrusion():
    clock, cfg = Clock(), IncidentConfig(close_after_s=3.0, update_every_s=0, scene_after_s=10.0)
    tracker, noise = IncidentTracker(cfg, clock), NoiseFilter(NoiseConfig(cooldown_s=0), clock)
    person = [rec(i, True, 100.0 + 0.2 * i, cover=0.05) for i in range(200)]
    events = feed(tracker, noise, clock, person)
    assert [(e.state, e.incident["kind"]) for e in events] == [(OPEN, INTRUSION)]


def test_an_incident_restored_from_a_stale_event_is_continued_not_reopened():
    clock, cfg = Clock(), IncidentConfig(close_after_s=3.0, update_every_s=0)
    first, noise = IncidentTracker(cfg, clock), NoiseFilter(NoiseConfig(cooldown_s=0), clock)
    events = feed(first, noise, clock, [rec(i, True, 100.0 + 0.1 * i) for i in range(10)])
    assert [e.state for e in events] == [OPEN]
    published = [e.to_dict() for e in events]  # only the open event: the alerter died before any update
    again, noise2 = IncidentTracker(cfg, clock), NoiseFilter(NoiseConfig(cooldown_s=0), clock)
    assert again.restore(published) == 1
    replay = [rec(i, True, 100.0 + 0.1 * i) for i in range(5, 20)]  # 5..9 re-read (uncommitted), 10..19 new
    events = feed(again, noise2, clock, replay) + feed(again, noise2, clock, [rec(99, False, 110.0)])
    assert [e.state for e in events] == [CLOSE]
    assert events[0].incident["id"] == published[0]["id"]
    assert events[0].incident["count"] == 16  # the opening frame, then 5..19 (1..4 were never re-read)
