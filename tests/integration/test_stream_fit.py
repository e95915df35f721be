"""Indexes learned from a camera's own stream: ``index fit --from-topic``, ``--candidate`` and ``index promote``,
``index recalibrate``, and ``explain`` fetching a stream index's nearest normal frames from Kafka.
Real broker, real Redis, the real CLI (in-process ``main``)."""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from framewatch.cli import main
from index_store.repository import IndexRepository
from review.answers import Answers
from tests.integration import harness as h
from wire.records import FrameRecord

pytestmark = pytest.mark.integration

SMALL = [
    "--backbone",
    "resnet18",
    "--weights",
    "random:0",
    "--crop",
    "64",
    "--batch-size",
    "8",
    "--threads",
    "2",
]
HOUR_MS = 3_600_000


def png(seed: int, solid: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    if solid:
        arr = np.full((48, 64, 3), 255, dtype=np.uint8)
        arr[:, :, 1] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    else:
        coarse = rng.integers(40, 220, (6, 8, 3), dtype=np.uint8)
        arr = np.asarray(Image.fromarray(coarse).resize((64, 48), Image.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def frames(source: str, seeds: list[int], solid: bool = False) -> list[FrameRecord]:
    return [FrameRecord(frame_id=f"{source}-{s}", source=source, sequence=s, capture_time=0.0, image=png(s, solid),
                        content_type="image/png") for s in seeds]  # fmt: skip


def produce(
    kafka_settings: Any, topic: str, records: list[FrameRecord], ts_ms: int
) -> dict[str, tuple[int, int]]:
    """Send as the producer does (keyed by source, default partitioner) with a given timestamp;
    frame id -> (partition, offset) as the broker acknowledged them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", **kafka_settings.client_kwargs())
    futures = []
    for r in records:
        key, value, headers = r.encode()
        futures.append(
            (r.frame_id, producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts_ms))
        )
    producer.flush()
    placed = {fid: (f.get(30).partition, f.get(30).offset) for fid, f in futures}
    producer.close()
    return placed


def same_partition_as(name: str, partitions: int) -> str:
    """Another camera name that kafka-python's partitioner sends to ``name``'s partition."""
    from kafka.partitioner.default import murmur2

    def where(n: str) -> int:
        return (murmur2(n.encode()) & 0x7FFFFFFF) % partitions

    return next(f"cam-{i}" for i in range(1000) if f"cam-{i}" != name and where(f"cam-{i}") == where(name))


@pytest.fixture
def env(kafka_settings, redis_url, unique, monkeypatch):  # type: ignore[no-untyped-def]
    topics = h.topics_for(unique, kafka_settings, partitions=4)
    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    monkeypatch.setenv("FRAMEWATCH_KAFKA", kafka_settings.bootstrap)
    monkeypatch.setenv("FRAMEWATCH_REDIS", redis_url)
    monkeypatch.setenv("FRAMEWATCH_TOPIC_FRAMES", topics.frames)
    monkeypatch.setenv("FRAMEWATCH_TOPIC_SCORES", topics.scores)
    import redis

    client = redis.Redis.from_url(redis_url)
    yield topics, IndexRepository(client, prefix)
    client.close()


def fit(*argv: str) -> None:
    assert main(["index", "fit", "--name", "idx", *SMALL, *argv]) == 0


def offsets(placed: dict[str, tuple[int, int]]) -> set[int]:
    return {o for _, o in placed.values()}


def used_offsets(meta: Any) -> set[int]:
    return {int(o.rsplit("/", 1)[1]) for o in meta.origins}


def test_fit_from_topic_reads_the_cameras_frames_of_the_period_from_its_partition(env, kafka_settings):  # type: ignore[no-untyped-def]
    topics, repo = env
    neighbour = same_partition_as("cam-a", 4)
    now = int(time.time() * 1000)
    old = produce(kafka_settings, topics.frames, frames("cam-a", list(range(0, 12))), now - 2 * HOUR_MS)
    shared = produce(kafka_settings, topics.frames, frames(neighbour, list(range(100, 110))), now - 60_000)
    recent = produce(kafka_settings, topics.frames, frames("cam-a", list(range(20, 28))), now - 60_000)
    produce(kafka_settings, topics.frames, frames("cam-b", list(range(200, 210))), now - 60_000)
    partition = {p for p, _ in recent.values()}.pop()
    assert {p for p, _ in shared.values()} == {partition}  # the neighbour's frames share cam-a's partition

    fit("--from-topic", "--source", "cam-a", "--since", "1h", "--dedup", "0", "--clean-fraction", "0")
    meta = repo.meta("idx")
    where = meta.frames_from
    assert where["topic"] == topics.frames and where["partition"] == partition and where["source"] == "cam-a"
    assert (
        where["frames_in_period"] == 8 and where["frames_used"] == 8
    )  # the neighbour's 10 frames are not counted
    assert where["offsets"] == [min(offsets(recent)), max(offsets(recent))]
    assert now / 1000 - 120 < where["times"][0] <= where["times"][1] < now / 1000
    assert where["counts"]["train"] + where["counts"]["held_out"] == 8
    assert meta.calibration["method"] == "holdout"  # held-out frames of the same period
    assert all(o.startswith(f"kafka://{topics.frames}/{partition}/") for o in meta.origins)
    assert used_offsets(meta) <= offsets(recent) and len(meta.origins) == where["counts"]["train"]

    fit(
        "--from-topic",
        topics.frames,
        "--source",
        "cam-a",
        "--last",
        "5",
        "--dedup",
        "0",
        "--clean-fraction",
        "0",
    )
    meta = repo.meta("idx")
    assert meta.version == 2 and meta.frames_from["frames_used"] == 5
    assert meta.frames_from["offsets"] == [sorted(offsets(recent))[-5], max(offsets(recent))]

    fit("--from-topic", "--source", "cam-a", "--last", "100", "--dedup", "0", "--clean-fraction", "0")
    assert repo.meta("idx").frames_from["frames_used"] == 20  # all of cam-a's frames, old ones too
    assert used_offsets(repo.meta("idx")) <= offsets(old) | offsets(recent)


def test_fit_from_topic_drops_near_duplicates_cleans_and_skips_bad_frames(env, kafka_settings):  # type: ignore[no-untyped-def]
    topics, repo = env
    now = int(time.time() * 1000)
    static = [FrameRecord(frame_id=f"cam-a-static-{i}", source="cam-a", sequence=100 + i, capture_time=0.0,
                          image=png(500), content_type="image/png") for i in range(15)]  # fmt: skip
    broken = [FrameRecord(frame_id="cam-a-broken", source="cam-a", sequence=99, capture_time=0.0,
                          image=png(6)[:60], content_type="image/png")]  # fmt: skip
    produce(kafka_settings, topics.frames, frames("cam-a", list(range(20))) + static + broken, now - 60_000)

    fit("--from-topic", "--source", "cam-a", "--since", "10m", "--clean-fraction", "0.1")
    where = repo.meta("idx").frames_from
    assert where["frames_in_period"] == 36 and sum(where["frames_bad"].values()) == 1
    counts = where["counts"]
    assert counts["embedded"] == 35
    assert counts["deduplicated"] == 21  # the 15 copies of one static frame count once
    assert counts["held_out"] == 4 and counts["train"] == 17 - round(
        17 * 0.1
    )  # one in five held out, then cleaned
    assert repo.meta("idx").clean_fraction == 0.1


def test_candidate_leaves_the_active_version_and_promote_switches_to_it(env, kafka_settings, capsys):  # type: ignore[no-untyped-def]
    topics, repo = env
    produce(kafka_settings, topics.frames, frames("cam-a", list(range(10))), int(time.time() * 1000))
    fit("--from-topic", "--source", "cam-a", "--last", "10")
    fit("--from-topic", "--source", "cam-a", "--last", "6", "--candidate")
    assert "version 2 (candidate)" in capsys.readouterr().out

    listed: list[str] = []

    def active() -> str:
        assert main(["index", "list"]) == 0
        listed[:] = capsys.readouterr().out.splitlines()
        return [line for line in listed if line.startswith("idx ")][0].split()[1]

    assert active() == "1"
    assert any(line.startswith("idx: candidate version(s) 2") for line in listed)
    assert main(["index", "promote", "idx", "2"]) == 0
    assert active() == "2"
    assert not any("candidate version" in line for line in listed)
    assert main(["index", "promote", "idx", "2"]) == 2  # promoted already: no longer a candidate
    assert "not a candidate" in capsys.readouterr().err
    assert main(["index", "promote", "idx", "1"]) == 2
    assert active() == "2"


def test_recalibrate_keeps_the_vectors_and_leaves_out_confirmed_anomalies(
    env, kafka_settings, redis_url, capsys
):  # type: ignore[no-untyped-def]
    topics, repo = env
    now = int(time.time() * 1000)
    produce(kafka_settings, topics.frames, frames("cam-a", list(range(12))), now - 3 * HOUR_MS)
    # one vector per frame: these "normal" frames are each a new random pattern, which regions would
    # (rightly) find as novel as the solid anomalies; the test is about what recalibration keeps and drops
    fit("--from-topic", "--source", "cam-a", "--since", "4h", "--clean-fraction", "0", "--regions", "1x1")
    v1 = repo.meta("idx")
    later = frames("cam-a", list(range(50, 65))) + frames("cam-a", [900, 901], solid=True)
    produce(kafka_settings, topics.frames, later, now - 60_000)
    produce(kafka_settings, topics.frames, frames("cam-b", list(range(70, 75)), solid=True), now - 60_000)

    def recalibrate() -> str:
        capsys.readouterr()
        assert (
            main(["index", "recalibrate", "idx", "--from-topic", "--source", "cam-a", "--since", "30m"]) == 0
        )
        return capsys.readouterr().out

    out = recalibrate()
    v2 = repo.meta("idx")
    assert "17 frames of 'cam-a' scored" in out and "0 confirmed anomalies left out" in out
    assert "alarm rate" in out and "before" in out and "after" in out
    answers = Answers(repo)
    for fid in ("cam-a-900", "cam-a-901"):  # as the review page stores a "confirmed" answer
        answers.put("idx", fid, "confirmed", "reviewer")
    out = recalibrate()
    v3 = repo.meta("idx")
    assert "2 confirmed anomalies left out" in out
    assert (v1.version, v2.version, v3.version) == (1, 2, 3) and repo.active_version("idx") == 3
    assert v1.sha256 == v2.sha256 == v3.sha256 and v1.n_vectors == v3.n_vectors  # the same vectors
    assert v3.calibration["method"] == "recalibrated" and v3.calibration["n_scores"] == 15
    assert v3.threshold < v2.threshold  # the anomalies no longer set the quantile
    assert v3.threshold != v1.threshold


def test_explain_shows_a_stream_indexs_nearest_normal_frames_fetched_from_kafka(env, kafka_settings, redis_url,
                                                                               unique, tmp_path):  # type: ignore[no-untyped-def]  # fmt: skip
    topics, repo = env
    train = frames("cam-a", list(range(10)))
    produce(kafka_settings, topics.frames, train, int(time.time() * 1000) - 60_000)
    fit("--from-topic", "--source", "cam-a", "--since", "10m", "--clean-fraction", "0", "--dedup", "0")
    meta = repo.meta("idx")
    first = meta.origins[0]
    copy_of = next(f for f in train if f.image == _image_at(kafka_settings, first))
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, repo.keys.prefix, topics, unique))
    try:
        h.produce_frames(kafka_settings, topics.frames,
                         [FrameRecord(frame_id="copy", source="cam-z", sequence=0, capture_time=0.0,
                                      image=copy_of.image, content_type="image/png")])  # fmt: skip
        assert h.wait_until(
            lambda: any(s.frame_id == "copy" for s in h.scores(kafka_settings, topics.scores)), 120
        )
    finally:
        running.close()
    rec = next(s for s in h.scores(kafka_settings, topics.scores) if s.frame_id == "copy")
    assert rec.neighbors and rec.neighbors[0] == first
    out = tmp_path / "why.png"
    assert main(["explain", "copy", "--out", str(out)]) == 0
    with Image.open(out) as im:  # the frame beside its region map, above the frame and its two neighbours
        sheet = np.asarray(im.convert("RGB"))
    strip = sheet[-(256 + 20) :]
    assert sheet.shape[1] >= 3 * 256 and rec.anomaly_map is not None
    frame_tile, neighbour_tile = strip[:256, :256], strip[:256, 256:512]
    assert np.array_equal(frame_tile, neighbour_tile)  # the training frame itself, fetched from Kafka


def _image_at(kafka_settings: Any, origin: str) -> bytes:
    from framewatch.topic_frames import parse_stream_origin
    from review.frames import FrameFetcher

    fetcher = FrameFetcher(kafka_settings)
    try:
        return fetcher.fetch(*(parse_stream_origin(origin) or ("", -1, -1))).image
    finally:
        fetcher.close()
