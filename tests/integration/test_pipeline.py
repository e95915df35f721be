"""End to end on a real broker and a real Redis: frames in, one score record each out."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from index_store.repository import IndexRepository
from tests.integration import harness as h
from wire.topics import H_ERROR_REASON

pytestmark = pytest.mark.integration


def test_index_published_to_redis_reads_back_equal(redis_client, unique):
    repo = IndexRepository(redis_client, f"t-{unique}")
    meta = h.publish_index(f"redis://127.0.0.1:{redis_client.connection_pool.connection_kwargs['port']}/0",
                           f"t-{unique}", "cams", n=33, threshold=1.5)  # fmt: skip
    loaded_meta, loaded = repo.load("cams")
    assert loaded_meta == meta
    expected = np.random.default_rng(0).normal(size=(33, h.SMALL_SPEC.dim)).astype(np.float32)
    np.testing.assert_array_equal(loaded.vectors, expected)
    assert repo.active_version("cams") == meta.version
    # a second version is a new number, and the first stays readable
    second = h.publish_index(f"redis://127.0.0.1:{redis_client.connection_pool.connection_kwargs['port']}/0",
                             f"t-{unique}", "cams", n=5, seed=1)  # fmt: skip
    assert second.version == meta.version + 1
    assert repo.load("cams", meta.version)[1].size == 33
    assert [s.name for s in repo.list()] == ["cams"]


def test_frames_in_scores_out_and_corrupt_frame_dead_lettered(kafka_settings, redis_url, unique):
    topics = h.topics_for(unique, kafka_settings)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "idx", threshold=1e9)
    good_before = h.frames("camA", 6) + h.frames("camB", 4)
    good_after = h.frames("camA", 5, start=100)
    corrupt = h.frames("camA", 1, start=50, image=lambda i: b"\xff\xd8\xff garbage, not a jpeg")

    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    try:
        h.produce_frames(kafka_settings, topics.frames, good_before + corrupt + good_after)
        expected = {f.frame_id: f for f in good_before + good_after}
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= len(expected), timeout=90)

        records = h.scores(kafka_settings, topics.scores)
        assert sorted(r.frame_id for r in records) == sorted(expected)
        for r in records:
            assert r.source == expected[r.frame_id].source
            assert r.origin == expected[r.frame_id].origin
            assert r.index_name == "idx" and r.index_version == 1
            assert r.score >= 0 and r.is_anomaly is False
        letters = h.dead_letters(kafka_settings, topics.dead_letters)
        assert len(letters) == 1
        assert letters[0].reason == "undecodable"
        assert letters[0].value == corrupt[0].image  # original bytes kept
        assert letters[0].header("fw-frame-id") == corrupt[0].frame_id
        assert H_ERROR_REASON not in dict(letters[0].headers)

        base = f"http://127.0.0.1:{running.worker.health.port}"

        def metrics() -> str:
            return urllib.request.urlopen(f"{base}/metrics").read().decode()

        # counted once the broker acknowledged them (the outbox reports acknowledgements as they come)
        assert h.wait_until(lambda: "framewatch_pending_outputs 0.0" in metrics(), timeout=10)
        body = metrics()
        assert 'framewatch_frames_scored_total{index="idx"} 15.0' in body
        assert 'framewatch_dead_letters_total{reason="undecodable"} 1.0' in body
        assert 'framewatch_dead_letters_total{reason="truncated"} 0.0' in body  # known reasons start at zero
        assert "framewatch_frames_consumed_total 16.0" in body
        assert "framewatch_ready 1.0" in body
        with urllib.request.urlopen(f"{base}/readyz") as resp:
            assert resp.status == 200, resp.read()
    finally:
        running.close()
    assert running.exit_code == [0]
