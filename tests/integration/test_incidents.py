"""Incidents through `framewatch alert` (a child process), a real broker and a local webhook: an intruder
crossing for 40 frames is one incident; an alerter restarted mid-incident does not open a second one; a
camera turned away is one scene-change incident. First on hand-made score records, then on frames scored by
a real worker. The full-length streams and the drift case: benchmarks/eval_incidents.py."""

from __future__ import annotations

import json
import threading
import time

import pytest

from benchmarks.stream_scenes import EventScene, png
from index_store.embedder import Embedder
from index_store.fitting import FitConfig, fit
from index_store.repository import IndexMeta, IndexRepository
from tests.integration import harness as h
from tests.integration.test_alert_faults import alerter, committed
from tests.integration.test_alerting import Hook, alert_topics_for, produce_scores
from wire.anomaly_map import encode_map
from wire.records import FrameRecord, ScoreRecord

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def frame(i: int, source: str, anomaly: bool, cover: float = 0.05) -> ScoreRecord:
    """A patch-index score record; when anomalous, ``cover`` of its 8x8 anomaly map is over the threshold."""
    now = time.time()
    cells = [[9.0 if anomaly and r * 8 + c < cover * 64 else 1.0 for c in range(8)] for r in range(8)]
    return ScoreRecord(frame_id=f"{source}-{i}", source=source, sequence=i, capture_time=now, score_time=now,
                       score=(9.0 + (i % 7) / 10) if anomaly else 1.0, threshold=5.0, is_anomaly=anomaly,
                       index_name="idx", index_version=1, backbone="resnet18", latency_s=0.1, frame_topic="frames",
                       frame_partition=0, frame_offset=i, hotspot=[10, 10, 20, 20] if anomaly else None,
                       anomaly_map=encode_map(cells))  # fmt: skip


def camera(
    kafka, topic: str, source: str, frames: list[bool], fps: float = 10.0, cover: float = 0.05
) -> None:  # type: ignore[no-untyped-def]
    """Publish one score per frame at ``fps``: True = anomalous."""
    for i, anomaly in enumerate(frames):
        produce_scores(kafka, topic, [frame(i, source, anomaly, cover)])
        time.sleep(1 / fps)


def incident_events(kafka, topic: str) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    return [json.loads(m.value) for m in h.read_topic(kafka, topic)]


def states(events: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [e["state"] for e in events if e["state"] in ("open", "close")]


def test_an_intruder_crossing_for_40_frames_gives_exactly_one_incident(kafka_settings, unique):
    topics, alert_topics = h.topics_for(unique, kafka_settings), alert_topics_for(unique, kafka_settings)
    hook = Hook()
    proc = alerter(kafka_settings, topics, alert_topics, f"alerts-{unique}", "--webhook", hook.url, "--need", "3",
                   "--of", "5", "--close-after", "3", "--from-beginning",
                   env={"FRAMEWATCH_TOPIC_INCIDENTS": alert_topics.incidents})  # fmt: skip
    try:
        proc.port()
        crossing = (
            [False] * 10 + [i != 20 for i in range(40)] + [False] * 10
        )  # one frame in the middle missed
        camera(kafka_settings, topics.scores, "yard", crossing)
        assert h.wait_until(lambda: states(hook.accepted) == ["open", "close"], 120), proc.output()
        assert h.wait_until(
            lambda: states(incident_events(kafka_settings, alert_topics.incidents)) == ["open", "close"], 30
        )
        time.sleep(4)  # longer than --close-after: nothing more may come (a late second incident)
        assert states(hook.accepted) == ["open", "close"]
    finally:
        proc.terminate(60)
        proc.close()
        hook.close()
    opened, closed = hook.accepted
    assert opened["id"] == closed["id"] and closed["source"] == "yard" and closed["kind"] == "intrusion"
    assert closed["count"] == 37  # frames 12..49 of the crossing (3 of 5 needed to open), but the missed one
    assert closed["peak_score"] == 9.6 and closed["peak_frame"]["hotspot"] == [10, 10, 20, 20]
    assert closed["peak_frame"]["topic"] == "frames" and closed["end"] > closed["start"]
    on_topic = incident_events(kafka_settings, alert_topics.incidents)
    assert {e["id"] for e in on_topic} == {opened["id"]}


def test_an_alerter_restarted_mid_incident_does_not_open_a_second_one(kafka_settings, unique):
    topics, alert_topics = h.topics_for(unique, kafka_settings), alert_topics_for(unique, kafka_settings)
    hook, group = Hook(), f"alerts-{unique}"
    args = ("--webhook", hook.url, "--close-after", "4", "--from-beginning")
    env = {"FRAMEWATCH_TOPIC_INCIDENTS": alert_topics.incidents}
    first = alerter(kafka_settings, topics, alert_topics, group, *args, env=env)
    intruder_left = threading.Event()

    def intruder() -> None:  # stays in view (10 fps) until told to leave, then the scene is normal again
        i = 0
        while not intruder_left.is_set():
            produce_scores(kafka_settings, topics.scores, [frame(i, "gate", True)])
            i += 1
            time.sleep(0.1)
        camera(kafka_settings, topics.scores, "gate", [False] * 10)

    feeder = threading.Thread(target=intruder, daemon=True)
    second = None
    try:
        first.port()
        feeder.start()
        assert h.wait_until(lambda: states(hook.accepted) == ["open"], 120), first.output()
        first.kill()  # a crash: no drain, no last commit, no checkpoint of the open incident
        second = alerter(kafka_settings, topics, alert_topics, group, *args, env=env)
        assert h.wait_until(lambda: "incidents: 1 still open" in second.output(), 60), second.output()
        assert h.wait_until(lambda: "partitions assigned" in second.output(), 90), second.output()
        time.sleep(2)  # the intruder is still there after the restart
        intruder_left.set()
        feeder.join(60)
        assert h.wait_until(lambda: states(hook.accepted) == ["open", "close"], 90), second.output()
        time.sleep(5)  # longer than --close-after: no second incident
    finally:
        intruder_left.set()
        for proc in (first, second):
            if proc is not None:
                if proc.alive():
                    proc.terminate(60)
                proc.close()
        hook.close()
    assert states(hook.accepted) == ["open", "close"]
    assert hook.accepted[0]["id"] == hook.accepted[1]["id"]
    on_topic = incident_events(kafka_settings, alert_topics.incidents)
    assert states(on_topic) == ["open", "close"] and len({e["id"] for e in on_topic}) == 1


def test_a_camera_turned_away_for_200_frames_is_one_scene_change_incident(kafka_settings, unique):
    topics, alert_topics = h.topics_for(unique, kafka_settings), alert_topics_for(unique, kafka_settings)
    hook = Hook()
    proc = alerter(kafka_settings, topics, alert_topics, f"alerts-{unique}", "--webhook", hook.url, "--need", "3",
                   "--of", "5", "--close-after", "3", "--scene-after", "8", "--from-beginning",
                   env={"FRAMEWATCH_TOPIC_INCIDENTS": alert_topics.incidents})  # fmt: skip
    try:
        proc.port()
        camera(
            kafka_settings,
            topics.scores,
            "dock",
            [False] * 10 + [True] * 200 + [False] * 10,
            fps=20,
            cover=0.9,
        )
        assert h.wait_until(lambda: states(hook.accepted) == ["open", "close"], 120), proc.output()
    finally:
        proc.terminate(60)
        proc.close()
        hook.close()
    assert [(a["state"], a["kind"]) for a in hook.accepted] == [
        ("open", "intrusion"), ("update", "scene-change"), ("close", "scene-change")]  # fmt: skip
    assert hook.accepted[-1]["count"] == 198 and "check the camera" in hook.accepted[-1]["advice"]


# Through a real worker: frames of the bay (benchmarks/stream_scenes.py's EventScene) scored by `framewatch
# work`'s loop on a global index, the records read by `framewatch alert`. The cases above feed the alerter
# hand-made score records; these check that what a worker really sends makes the same incidents.
FPS = 5.0  # the camera's frame rate: capture times are stream time, so the frames can be sent at once


def fit_scene_index(redis_url: str, prefix: str, scene: EventScene) -> None:
    """A global index of 60 normal frames of the bay, calibrated as `index fit` does (1 % target)."""
    import redis

    emb = Embedder(h.SMALL_SPEC).embed([scene.normal() for _ in range(60)])
    index, cal, _ = fit(emb, FitConfig(target_fpr=0.01))
    meta = IndexMeta(name="idx", kind="exact", k=2, dim=index.dim, n_vectors=index.size, spec=h.SMALL_SPEC.to_dict(),
                     threshold=cal.threshold, calibration=cal.to_dict())  # fmt: skip
    IndexRepository(redis.Redis.from_url(redis_url), prefix).publish(meta, index)


def camera_frames(source: str, images: list, t0: float, start: int = 0) -> list[FrameRecord]:  # type: ignore[type-arg]
    """PNG frame records of a camera at FPS whose frame 0 was captured at ``t0``."""
    return [FrameRecord(frame_id=f"{source}-{i}", source=source, sequence=i, capture_time=t0 + i / FPS,
                        image=png(img), content_type="image/png")
            for i, img in enumerate(images, start)]  # fmt: skip


def all_read(kafka, group: str, topics, n: int) -> bool:  # type: ignore[no-untyped-def]
    """The alerter group has committed past all ``n`` score records (so it has acted on every one)."""
    return sum(committed(kafka, group, topics.scores).values()) >= n


def test_through_a_real_worker_an_intruder_is_one_incident_across_an_alerter_restart(
    kafka_settings, redis_url, unique
):
    topics, alert_topics = h.topics_for(unique, kafka_settings, 1), alert_topics_for(unique, kafka_settings)
    prefix, group, scene, t0 = f"t-{unique}", f"alerts-{unique}", EventScene(0), time.time() - 600
    fit_scene_index(redis_url, prefix, scene)
    first_half = camera_frames(
        "yard", [scene.normal() for _ in range(20)] + [scene.intruder(k, 40) for k in range(20)], t0
    )
    second_half = camera_frames("yard", [scene.intruder(k, 40) for k in range(20, 40)] + [scene.normal() for _ in range(30)], t0, 40)  # fmt: skip
    hook, env = Hook(), {"FRAMEWATCH_TOPIC_INCIDENTS": alert_topics.incidents}
    args = ("--webhook", hook.url, "--need", "3", "--of", "5", "--close-after", "3", "--from-beginning",
            "--session-timeout-ms", "6000")  # the crashed alerter's partition is reassigned sooner  # fmt: skip
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    first = alerter(kafka_settings, topics, alert_topics, group, *args, env=env)
    second = None
    try:
        h.produce_frames(kafka_settings, topics.frames, first_half)
        assert h.wait_until(lambda: states(hook.accepted) == ["open"], 120), first.output()
        first.kill()  # half way across: the alerter crashes with the incident open
        second = alerter(kafka_settings, topics, alert_topics, group, *args, env=env)
        h.produce_frames(kafka_settings, topics.frames, second_half)  # the intruder walks on, then leaves
        assert h.wait_for_ids(kafka_settings, topics, h.ids(first_half + second_half), 120)
        assert h.wait_until(lambda: all_read(kafka_settings, group, topics, 90), 120), second.output()
    finally:
        for proc in (first, second):
            if proc is not None:
                if proc.alive():
                    proc.terminate(60)
                proc.close()
        hook.close()
        running.close()
    assert states(hook.accepted) == ["open", "close"] and hook.accepted[0]["id"] == hook.accepted[1]["id"]
    closed = hook.accepted[1]
    crossing = {f"yard-{i}" for i in range(20, 60)}
    assert closed["kind"] == "intrusion" and closed["peak_frame"]["frame_id"] in crossing
    assert first_half[20].capture_time <= closed["start"] and closed["end"] <= second_half[19].capture_time
    on_topic = incident_events(kafka_settings, alert_topics.incidents)
    assert states(on_topic) == ["open", "close"] and {e["id"] for e in on_topic} == {closed["id"]}


def test_through_a_real_worker_a_camera_turned_away_is_one_scene_change_incident(
    kafka_settings, redis_url, unique
):
    """A global index has no anomaly map: the kind comes from the scores being a plateau (a step)."""
    topics, alert_topics = h.topics_for(unique, kafka_settings, 1), alert_topics_for(unique, kafka_settings)
    prefix, group, scene = f"t-{unique}", f"alerts-{unique}", EventScene(0)
    fit_scene_index(redis_url, prefix, scene)
    frames = camera_frames("dock", [scene.normal() for _ in range(20)] + [scene.turned() for _ in range(60)]
                           + [scene.normal() for _ in range(30)], time.time() - 600)  # fmt: skip
    hook = Hook()
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    proc = alerter(kafka_settings, topics, alert_topics, group, "--webhook", hook.url, "--need", "3", "--of", "5",
                   "--close-after", "3", "--scene-after", "8", "--from-beginning",
                   env={"FRAMEWATCH_TOPIC_INCIDENTS": alert_topics.incidents})  # fmt: skip
    try:
        h.produce_frames(kafka_settings, topics.frames, frames)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(frames), 120)
        assert h.wait_until(lambda: all_read(kafka_settings, group, topics, len(frames)), 120), proc.output()
    finally:
        proc.terminate(60)
        proc.close()
        hook.close()
        running.close()
    assert [(a["state"], a["kind"]) for a in hook.accepted] == [
        ("open", "intrusion"), ("update", "scene-change"), ("close", "scene-change")]  # fmt: skip
    closed = hook.accepted[-1]
    assert 55 <= closed["count"] <= 60 and "check the camera" in closed["advice"]  # the 60 frames turned away
    assert states(incident_events(kafka_settings, alert_topics.incidents)) == ["open", "close"]
