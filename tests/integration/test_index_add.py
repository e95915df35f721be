"""`framewatch index add NAME --dir DIR`: images a person says are normal become a new active version."""

from __future__ import annotations

import pytest

from framewatch.cli import main
from index_store.repository import IndexMeta, IndexRepository
from tests.conftest import png_bytes
from tests.integration import harness as h

pytestmark = pytest.mark.integration


def test_index_add_dir_publishes_a_version_that_records_who_marked_what(
    redis_url, redis_client, unique, capsys, monkeypatch, tmp_path
):
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "cams", threshold=1.0)
    (tmp_path / "night").mkdir()
    (tmp_path / "night" / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "b.png").write_bytes(png_bytes(2))
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    assert main(["index", "add", "cams", "--dir", str(tmp_path), "--by", "bob", "--redis", redis_url]) == 0
    out = capsys.readouterr().out
    assert "index 'cams' version 2 is active: absorbed 2 frame(s) marked normal by bob (append)" in out
    meta = IndexRepository(redis_client, prefix).meta("cams")
    assert meta.version == 2 and meta.n_vectors == 20 + 2 * 2  # each frame k=2 times
    assert meta.feedback["by"] == {"bob": 2} and sorted(meta.feedback["frames"]) == ["b.png", "night/a.png"]
    assert main(["index", "add", "nope", "--dir", str(tmp_path), "--redis", redis_url]) == 2
    assert "no index 'nope'" in capsys.readouterr().err


def test_index_add_teaches_a_coreset_index_and_keeps_its_threshold(
    redis_url, redis_client, unique, capsys, monkeypatch, tmp_path
):
    import numpy as np

    from index_store.knn import build_coreset

    prefix = f"t-{unique}"
    repo = IndexRepository(redis_client, prefix)
    index = build_coreset(np.random.default_rng(0).normal(size=(40, h.SMALL_SPEC.dim)).astype(np.float32), 10)
    repo.publish(IndexMeta(name="yard", kind="coreset", k=2, dim=index.dim, n_vectors=index.size, clusters=10,
                           spec=h.SMALL_SPEC.to_dict(), threshold=1.0), index, activate=True)  # fmt: skip
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    assert main(["index", "add", "yard", "--dir", str(tmp_path), "--by", "bob", "--redis", redis_url]) == 0
    said = capsys.readouterr().out
    assert "version 2 is active: absorbed 1 frame(s) marked normal by bob (new-vectors)" in said
    meta, taught = repo.load("yard")
    assert (meta.kind, meta.n_vectors, meta.threshold) == ("coreset", 10 + 2, 1.0)  # the frame, k = 2 times
    assert "upper bound" in meta.calibration["threshold_kept"]
    assert np.array_equal(taught.vectors[:10], index.vectors)  # nothing it held moved


def test_index_add_frames_finds_them_by_id_on_the_score_topic(
    kafka_settings, redis_url, redis_client, unique, capsys, monkeypatch
):
    from wire.records import ScoreRecord

    topics = h.topics_for(unique, kafka_settings)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "cams", threshold=1.0)
    frame = h.frames("cam1", 1, start=7)[0]
    [(partition, offset)] = h.produce_messages(kafka_settings, topics.frames, [frame.encode()])
    record = ScoreRecord(frame_id=frame.frame_id, source="cam1", sequence=7, capture_time=0.0, score_time=0.0,
                         score=5.0, threshold=1.0, is_anomaly=True, index_name="cams", index_version=1,
                         backbone="resnet18", latency_s=0.1, frame_topic=topics.frames, frame_partition=partition,
                         frame_offset=offset)  # fmt: skip
    h.produce_messages(kafka_settings, topics.scores, [(*record.encode(), [])])
    env = {"FRAMEWATCH_REDIS_PREFIX": prefix, "FRAMEWATCH_TOPIC_FRAMES": topics.frames,
           "FRAMEWATCH_TOPIC_SCORES": topics.scores, "FRAMEWATCH_TOPIC_DLQ": topics.dead_letters}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    args = ["--by", "carol", "--redis", redis_url, "--kafka", kafka_settings.bootstrap]
    assert main(["index", "add", "cams", "--frames", frame.frame_id, *args]) == 0
    assert "version 2 is active: absorbed 1 frame(s) marked normal by carol" in capsys.readouterr().out
    meta = IndexRepository(redis_client, prefix).meta("cams")
    assert meta.feedback["frames"] == [frame.frame_id] and meta.feedback["by"] == {"carol": 1}
    assert main(["index", "add", "cams", "--frames", "never-seen", *args]) == 2
    assert "no score record for frame(s) never-seen" in capsys.readouterr().err
