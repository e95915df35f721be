"""``framewatch learn``'s decisions (learning/tracker.py): which cameras, when they have been seen enough,
what is left alone, what a restart re-reads. Frames carry their Kafka timestamps; the clock is injected."""

from __future__ import annotations

import pytest

from learning.tracker import (
    FAILED,
    FITTED,
    FITTING,
    INDEXED,
    LEARNING,
    CameraTracker,
    LearnPolicy,
    PolicyError,
)

MIN = 60_000  # ms


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def tracker(indexed: set[str] = frozenset(), **policy: object) -> tuple[CameraTracker, Clock, list[str]]:  # type: ignore[assignment]
    asked: list[str] = []

    def has_index(name: str) -> bool:
        asked.append(name)
        return name in indexed

    clock = Clock()
    defaults: dict[str, object] = {"match": ("cam-*",), "frames": 10, "min_span_s": 300.0}
    return CameraTracker(LearnPolicy(**{**defaults, **policy}), has_index, clock), clock, asked  # type: ignore[arg-type]


def feed(t: CameraTracker, source: str, n: int, start_ms: int = 0, step_ms: int = MIN, partition: int = 0,
         first_offset: int = 0) -> None:  # fmt: skip
    for i in range(n):
        t.observe(source, partition, first_offset + i, start_ms + i * step_ms)


def test_a_camera_is_due_after_enough_frames_over_the_min_span_not_before():
    t, _, _ = tracker()
    feed(t, "cam-a", 9, step_ms=MIN)  # 9 frames over 8 minutes: too few
    assert t.due() == []
    feed(t, "cam-a", 1, start_ms=9 * MIN, first_offset=9)
    assert [c.source for c in t.due()] == ["cam-a"]

    feed(t, "cam-b", 50, step_ms=1000)  # plenty of frames, over 49 s only
    assert [c.source for c in t.due()] == ["cam-a"]
    feed(t, "cam-b", 1, start_ms=5 * MIN, first_offset=50)
    assert [c.source for c in t.due()] == ["cam-a", "cam-b"]  # oldest first


def test_only_matching_cameras_are_learned_under_the_templated_name():
    t, _, asked = tracker(match=("cam-*", "dock?"), name_template="site1-{source}")
    for source in ("cam-a", "dock1", "dock12", "gate", "CAM-b"):
        feed(t, source, 10, step_ms=MIN)
    assert sorted(c.source for c in t.due()) == ["cam-a", "dock1"]
    assert sorted(asked) == [
        "site1-cam-a",
        "site1-dock1",
    ]  # Redis asked once per matching camera, not per frame
    assert t.cameras["cam-a"].index == "site1-cam-a"


def test_a_camera_that_has_an_index_is_left_alone_and_holds_nothing_back():
    t, _, asked = tracker(indexed={"cam-a"})
    feed(t, "cam-a", 100, step_ms=MIN)
    assert t.due() == [] and t.cameras["cam-a"].state == INDEXED and t.cameras["cam-a"].seen == 0
    assert t.watermark() == {} and asked == ["cam-a"]
    assert t.counts()[INDEXED] == 1


def test_an_index_that_appears_while_learning_stops_the_fit():
    indexed: set[str] = set()
    t, _, _ = tracker(indexed)
    feed(t, "cam-a", 10, step_ms=MIN)
    [cam] = t.due()
    indexed.add("cam-a")  # someone ran `index fit` meanwhile, or another learner did
    assert t.start_fit(cam) is False and cam.state == INDEXED


def test_watermark_holds_the_first_frame_of_cameras_still_to_be_fitted_then_lets_go():
    t, _, _ = tracker()
    feed(t, "cam-a", 10, step_ms=MIN, partition=0, first_offset=100)
    feed(t, "cam-b", 3, partition=0, first_offset=140)
    feed(t, "cam-c", 3, partition=1, first_offset=7)
    assert t.watermark() == {0: 100, 1: 7}
    [cam] = t.due()
    assert t.start_fit(cam) and cam.state == FITTING
    assert t.watermark() == {0: 100, 1: 7}  # a crash mid-fit re-reads cam-a
    t.fitted(cam, version=1)
    assert cam.state == FITTED and cam.version == 1
    assert t.watermark() == {0: 140, 1: 7}
    feed(t, "cam-a", 20, start_ms=20 * MIN, first_offset=200)
    assert t.due() == [] and cam.seen == 10  # fitted once: never again in this process


def test_a_failed_fit_learns_again_from_later_frames_after_the_retry_time():
    t, clock, _ = tracker(retry_after_s=600.0)
    feed(t, "cam-a", 10, step_ms=MIN, first_offset=0)
    [cam] = t.due()
    t.start_fit(cam)
    t.failed(cam, "TopicReadError: gone")
    assert cam.state == FAILED and cam.seen == 0 and t.watermark() == {}
    feed(t, "cam-a", 10, start_ms=30 * MIN, step_ms=MIN, first_offset=50)
    assert t.due() == []  # enough frames again, but not before the retry time
    clock.now += 601
    assert t.due() == [cam] and t.watermark() == {0: 50}
    assert t.take_changed()["cam-a"]["error"] == "TopicReadError: gone"


def test_frames_kept_per_camera_are_bounded_and_spread_over_the_whole_period():
    t, _, _ = tracker(keep=100)
    feed(t, "cam-a", 1000, step_ms=1000)
    cam = t.cameras["cam-a"]
    located = cam.located()
    assert cam.seen == 1000 and 50 <= len(located) < 100
    offsets = [o for o, _ in located]
    assert offsets[0] == 0 and offsets[-1] >= 990 - 20 and offsets == sorted(offsets)
    gaps = {b - a for a, b in zip(offsets, offsets[1:])}
    assert len(gaps) == 1  # evenly spaced
    assert cam.span_s == 999.0  # span and count cover every frame seen, not only those kept


def test_idle_cameras_are_forgotten_and_revoked_partitions_dropped():
    t, clock, _ = tracker(forget_after_s=3600.0)
    feed(t, "cam-a", 3, partition=0)
    clock.now += 1800
    feed(t, "cam-b", 3, partition=1)
    clock.now += 1801
    assert t.forget_idle() == ["cam-a"]
    assert set(t.cameras) == {"cam-b"}
    t.revoke([1])
    assert t.cameras == {} and t.watermark() == {}


def test_progress_records_say_what_status_shows():
    t, _, _ = tracker()
    feed(t, "cam-a", 4, step_ms=MIN)
    assert t.take_changed(progress=True)["cam-a"] == {
        "index": "cam-a", "state": LEARNING, "frames": 4, "span_s": 180.0, "partition": 0, "version": None,
        "error": "", "first_offset": 0,
    }  # fmt: skip
    assert t.take_changed() == {}  # nothing changed state since


@pytest.mark.parametrize("policy, says", [
    ({"match": ()}, "--match"),
    ({"match": ("cam-*",), "name_template": "cams"}, "{source}"),
    ({"match": ("cam-*",), "frames": 1}, "--frames"),
])  # fmt: skip
def test_a_policy_that_cannot_work_is_refused(policy, says):
    with pytest.raises(PolicyError, match=says.replace("{", r"\{").replace("}", r"\}")):
        LearnPolicy(**policy)  # type: ignore[arg-type]


class FakeRepo:
    """What `framewatch status` reads: learning records, active pointers, candidates."""

    def __init__(self, records: dict, active: dict, candidates: dict) -> None:  # type: ignore[type-arg]
        self.records, self.active, self.cands = records, active, candidates

    def learning(self) -> dict:  # type: ignore[type-arg]
        return self.records

    def active_version(self, name: str) -> object:
        return self.active.get(name)

    def candidates(self, name: str) -> list[int]:
        return self.cands.get(name, [])


def test_status_says_which_cameras_are_learning_failed_candidate_or_active():
    from framewatch.status_cmd import learning

    rec = {"frames": 500, "span_s": 1800.0, "partition": 0, "first_offset": 0}
    repo = FakeRepo(
        {"cam-a": {**rec, "index": "cam-a", "state": "fitted", "version": 1, "error": ""},
         "cam-b": {**rec, "index": "cam-b", "state": "fitted", "version": 1, "error": ""},
         "cam-c": {**rec, "index": "cam-c", "state": "fitted", "version": 1, "error": ""},
         "cam-d": {**rec, "index": "cam-d", "state": "learning", "frames": 12, "version": None, "error": ""},
         "cam-e": {**rec, "index": "cam-e", "state": "failed", "version": None, "error": "TopicReadError: gone"}},
        active={"cam-a": 1, "cam-c": 2}, candidates={"cam-b": [1]},
    )  # fmt: skip
    rows = {line.split()[0]: line for line in learning(repo)[2:]}
    assert rows["cam-a"].split()[2] == "active"
    assert rows["cam-b"].split()[2] == "candidate"
    assert rows["cam-c"].split()[2] == "fitted" and "(active: 2)" in rows["cam-c"]  # superseded since
    assert rows["cam-d"].split()[2:4] == ["learning", "12"]
    assert rows["cam-e"].split()[2] == "failed" and rows["cam-e"].endswith("TopicReadError: gone")
    assert learning(FakeRepo({}, {}, {})) == []
