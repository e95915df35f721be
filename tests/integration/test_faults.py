"""Fault tests for issue 4, "a worker that loses nothing", on a real broker and a real Redis.

Each test produces frames with known ids, breaks something while they flow,
then reads the score topic and the dead-letter topic: every produced id
appears at least once, and only the expected ids are dead letters.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis

from framewatch.services import LocalBroker, LocalRedis
from index_store.errors import CorruptIndex
from index_store.keys import Keys
from tests.frame_corpus import CORPUS_LIMITS, bad_samples, hostile_headers, valid_samples, with_headers
from tests.integration import harness as h
from wire import topics as t
from wire.records import FrameRecord

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ids, interleave = h.ids, h.interleave




def sample(registry, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def setup(kafka_settings, redis_url, unique):  # type: ignore[no-untyped-def]
    """Fresh topics, Redis prefix and group name for one test."""
    topics = h.topics_for(unique, kafka_settings, partitions=4)
    return topics, f"t-{unique}", f"g-{unique}"


# -- worker processes killed and stopped -----------------------------------------------------
def test_sigkill_mid_stream_then_a_new_worker_loses_nothing(kafka_settings, redis_url, setup, client):
    topics, prefix, group = setup
    h.publish_index(redis_url, prefix, "idx")
    produced = interleave(h.frames("camA", 25), h.frames("camB", 25))
    first = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
    second = None
    try:
        assert h.wait_until(lambda: bool(first.assigned()), 60), first.output()
        feeder = h.Feeder(kafka_settings, topics.frames, produced, rate=12).start()
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 10, 60), first.output()
        first.kill()
        scored_before_kill = len(h.scores(kafka_settings, topics.scores))
        assert scored_before_kill < len(produced), "killed too late to be mid-stream"
        second = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
        feeder.join()
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 90), second.output()
        h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        assert second.alive()
    finally:
        first.close()
        if second is not None:
            second.close()


def test_two_workers_one_killed_the_other_takes_its_partitions(kafka_settings, redis_url, setup, client):
    topics, prefix, group = setup
    h.publish_index(redis_url, prefix, "idx")
    a = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
    b = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
    try:
        split = lambda: a.assigned() and b.assigned() and sorted(a.assigned() + b.assigned()) == [0, 1, 2, 3]  # noqa: E731
        assert h.wait_until(split, 60), a.output() + "\n---\n" + b.output()
        cams = [h.frames(src, 12) for src in h.sources_covering(4)]  # frames on every partition
        produced = interleave(*cams)
        feeder = h.Feeder(kafka_settings, topics.frames, produced, rate=15).start()
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 15, 60)
        workers_seen = {r.worker for r in h.scores(kafka_settings, topics.scores)}
        a.kill()
        feeder.join()
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 90), b.output()
        h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        assert len(workers_seen) == 2, "both workers were scoring before the kill"
        assert sorted(b.assigned()) == [0, 1, 2, 3]
        assert b.alive()
    finally:
        a.close()
        b.close()


def test_sigterm_drains_exits_0_and_a_restart_rescores_nothing(kafka_settings, redis_url, setup, client):
    topics, prefix, group = setup
    h.publish_index(redis_url, prefix, "idx")
    first_frames = interleave(h.frames("camA", 20), h.frames("camB", 20))
    later_frames = h.frames("camA", 10, start=100)
    first = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
    second = None
    try:
        assert h.wait_until(lambda: bool(first.assigned()), 60), first.output()
        feeder = h.Feeder(kafka_settings, topics.frames, first_frames, rate=10).start()
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 8, 60), first.output()
        assert first.terminate(timeout=40) == 0, first.output()  # mid-stream: frames still arriving
        assert "drained; offsets committed" in first.output()
        feeder.join()
        done_by_first = {r.frame_id for r in h.scores(kafka_settings, topics.scores)}
        assert len(done_by_first) < len(first_frames), "stopped too late to be mid-stream"

        second = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
        h.produce_frames(kafka_settings, topics.frames, later_frames)
        produced = ids(first_frames) | ids(later_frames)
        assert h.wait_for_ids(kafka_settings, topics, produced, 90), second.output()
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, produced)
        twice = {fid: len(recs) for fid, recs in scored.items() if len(recs) > 1}
        assert not twice, f"scored again after a clean stop: {twice}"
        assert second.terminate(timeout=40) == 0, second.output()
    finally:
        first.close()
        if second is not None:
            second.close()


# -- bad input -----------------------------------------------------------------------------
def test_bad_frames_are_dead_lettered_valid_odd_ones_scored_worker_alive_and_bounded(
    kafka_settings, redis_url, setup, client):  # fmt: skip
    topics, prefix, group = setup
    h.publish_index(redis_url, prefix, "idx")
    bad, odd = bad_samples(), valid_samples()
    good = h.frames("camG", 24)

    def message(name: str, data: bytes, ctype: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        rec = FrameRecord(frame_id=name, source="camX", sequence=0, capture_time=time.time(), image=data,
                          content_type=ctype)  # fmt: skip
        key, value, headers = rec.encode()
        return key, value, [(k, v) for k, v in headers if k != t.H_CONTENT_TYPE or ctype]

    messages = [f.encode() for f in good[:8]]
    for i, s in enumerate(bad + odd):
        messages.append(message(s.name, s.data, s.content_type))
        messages.append(good[8 + i % 16].encode() if i < 16 else good[8].encode())
    hostile = hostile_headers()  # a valid image under headers that try to become markup or absurd numbers
    hostile_id = {hs.name: hs.headers.get(t.H_FRAME_ID, hs.name.encode()).decode() for hs in hostile}
    for hs in hostile:
        key, value, headers = message(hs.name, good[3].image, "image/jpeg")
        messages.append((key, value, with_headers(headers, hs.headers)))
    # missing optional headers: no frame id, no source, no content type; the id comes from topic/partition/offset
    messages.append((b"camH", good[0].image, []))
    messages.append((None, good[1].image, [(t.H_SEQUENCE, b"7")]))
    # a header that is not UTF-8 text
    messages.append((b"camX", good[2].image, [(t.H_FRAME_ID, b"bad-header"), (t.H_SOURCE, b"\xff\xfe")]))

    worker = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client,
                              extra=("--max-bytes", str(CORPUS_LIMITS.max_bytes),
                                     "--max-decode-mib", str(CORPUS_LIMITS.max_decode_bytes >> 20)))  # fmt: skip
    rss: list[int] = []
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set() and worker.alive():
            rss.append(worker.rss_kib())
            stop.wait(0.1)

    try:
        worker.port()  # started and serving /metrics
        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        offsets = h.produce_messages(kafka_settings, topics.frames, messages)
        headerless = {f"{topics.frames}/{p}/{o}" for p, o in offsets[-3:-1]}
        produced = ids(good) | {s.name for s in bad + odd} | headerless | {"bad-header"} | set(hostile_id.values())
        expected_dead = {s.name for s in bad} | {"bad-header"} | {hostile_id[hs.name] for hs in hostile if hs.reason}
        assert h.wait_for_ids(kafka_settings, topics, produced, 90), worker.output()
        scored, letters = h.assert_nothing_lost(kafka_settings, topics, produced, expected_dead)

        for s in bad:
            (letter,) = letters[s.name]
            assert letter.reason == s.reason, (s.name, letter.detail)
            assert letter.value == s.data and letter.detail  # original bytes kept, with a reason
        assert letters["bad-header"][0].reason == "malformed-header"
        for s in odd:
            assert scored[s.name][0].score >= 0, s.name
        for hs in hostile:
            if hs.reason:
                assert letters[hostile_id[hs.name]][0].reason == hs.reason, hs.name
            else:  # an absurd capture time is replaced by the message timestamp: sane in records and metrics
                (rec,) = scored[hs.name]
                assert abs(rec.capture_time - time.time()) < 600 and 0 <= rec.latency_s < 600, (hs.name, rec)
        for fid in headerless:
            (rec,) = scored[fid]
            assert rec.source in ("camH", "unknown") and np.isfinite(rec.score)

        assert worker.alive(), worker.output()
        assert worker.get("/healthz")[0] == 200
        body = worker.get("/metrics")[1]
        for s in bad:
            assert h.metric_value(body, f'framewatch_dead_letters_total{{reason="{s.reason}"}}') >= 1
        assert h.metric_value(body, "framewatch_capture_time_replaced_total") == 4
        assert h.metric_value(body, "framewatch_end_to_end_latency_seconds_sum") < 3600, "latency sum poisoned"
    finally:
        stop.set()
        worker.close()
    # a decoded 30000x30000 bomb alone would be 2.7 GB; torch + ResNet-18 + the corpus stay far below 1.5 GB
    assert rss and max(rss) < 1.5 * 1024 * 1024, f"peak RSS {max(rss) / 1024:.0f} MiB"


# -- Redis and index versions ----------------------------------------------------------------
def test_redis_restart_while_frames_flow_scoring_continues(kafka_settings, setup, unique):
    topics, prefix, _ = setup
    with LocalRedis() as own_redis:
        h.publish_index(own_redis.url, prefix, "idx")
        running = h.start_worker(h.worker_config(kafka_settings, own_redis.url, prefix, topics, unique))
        try:
            assert h.wait_assigned(running)
            produced = interleave(h.frames("camA", 20), h.frames("camB", 20))
            feeder = h.Feeder(kafka_settings, topics.frames, produced, rate=12).start()
            assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 8, 60)
            own_redis.restart()  # memory only: the index is gone from Redis, the worker still holds it
            feeder.join()
            assert h.wait_for_ids(kafka_settings, topics, ids(produced), 90)
            scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced))
            assert {r.index_version for recs in scored.values() for r in recs} == {1}
            reg = running.worker.registry
            assert h.wait_until(lambda: sample(reg, "framewatch_reconnects_total", dependency="redis") >= 1, 20)
            assert running.alive()
            st = running.worker.status()
            ok, detail = st.ready, st.detail
            assert ok, detail

            # the emptied Redis numbers a re-fitted index "version 1" again: the worker must still load it
            h.publish_index(own_redis.url, prefix, "idx", seed=7, threshold=1e9)
            loaded = lambda: sample(reg, "framewatch_index_reloads_total", index="idx", result="loaded")  # noqa: E731
            assert h.wait_until(lambda: loaded() == 2, 15)
            later = h.frames("camA", 5, start=100)
            h.produce_frames(kafka_settings, topics.frames, later)
            assert h.wait_for_ids(kafka_settings, topics, ids(later), 60)
            scored, _ = h.outcome(kafka_settings, topics)
            assert all(r.threshold == 1e9 for f in later for r in scored[f.frame_id])
        finally:
            running.close()
    assert running.exit_code == [0]


def test_new_index_version_while_frames_flow(kafka_settings, redis_url, setup, unique):
    topics, prefix, _ = setup
    h.publish_index(redis_url, prefix, "idx", seed=1)
    # a long periodic check: the switch below can only arrive in time through pub/sub
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, index_poll_s=60.0))
    try:
        assert h.wait_assigned(running)
        produced = interleave(h.frames("camA", 40), h.frames("camB", 40))  # ~7 s of frames: the switch lands mid-flow
        feeder = h.Feeder(kafka_settings, topics.frames, produced, rate=12).start()
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 4, 60)
        h.publish_index(redis_url, prefix, "idx", seed=2)  # version 2, activated, announced
        reg = running.worker.registry
        assert h.wait_until(lambda: sample(reg, "framewatch_index_version", index="idx") == 2, 5, every=0.05)
        sent_after_switch = produced[feeder.sent + 1 :]  # + 1: the one in flight may predate the switch
        feeder.join()
        assert len(sent_after_switch) >= 5
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 90)
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        versions = {fid: {r.index_version for r in recs} for fid, recs in scored.items()}
        assert set().union(*versions.values()) == {1, 2}
        assert all(versions[f.frame_id] == {2} for f in sent_after_switch)
    finally:
        running.close()
    assert running.exit_code == [0]


def test_index_of_another_backbone_or_dimension_is_refused_old_one_keeps_serving(
    kafka_settings, redis_url, setup, unique
):  # fmt: skip
    from index_store.spec import EmbedderSpec

    topics, prefix, _ = setup
    h.publish_index(redis_url, prefix, "idx")
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, index_poll_s=1.0))
    reg = running.worker.registry
    try:
        assert h.wait_assigned(running)
        produced = interleave(h.frames("camA", 20), h.frames("camB", 20))
        feeder = h.Feeder(kafka_settings, topics.frames, produced[:20], rate=12).start()
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 5, 60)
        refused = lambda: sample(reg, "framewatch_index_reloads_total", index="idx", result="refused")  # noqa: E731
        wrong_dim = np.random.default_rng(3).normal(size=(20, 256)).astype(np.float32)
        with pytest.raises(CorruptIndex, match="dimension 256"):  # publish refuses it before writing anything
            h.publish_index(redis_url, prefix, "idx", vectors=wrong_dim)
        h.write_raw_version(redis_url, prefix, "idx", h.raw_meta(dim=256), wrong_dim.tobytes())  # v2, by hand
        assert h.wait_until(lambda: refused() == 1, 10)
        other = EmbedderSpec("resnet34", "random:0", resize=64, crop=64)
        h.publish_index(redis_url, prefix, "idx", spec=other)  # v3: same dimension, another backbone
        assert h.wait_until(lambda: refused() == 2, 10)
        feeder.join()
        assert h.wait_for_ids(kafka_settings, topics, ids(produced[:20]), 60)
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced[:20]))
        assert {r.index_version for recs in scored.values() for r in recs} == {1}
        st = running.worker.status()
        ok, detail = st.ready, st.detail
        assert ok and "idx@1" in detail and "version 3 refused" in detail, detail
        time.sleep(2.5)  # a few periodic checks: a refused version is not loaded (and counted) again
        assert refused() == 2

        # a good version 4, activated without an event: the periodic check finds it
        good = h.publish_index(redis_url, prefix, "idx", seed=4, activate=False)
        client = redis.Redis.from_url(redis_url)
        client.set(Keys(prefix).active("idx"), good.version)  # no event published
        assert h.wait_until(lambda: sample(reg, "framewatch_index_version", index="idx") == 4, 10)
        h.produce_frames(kafka_settings, topics.frames, produced[20:])
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 60)
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        assert all(r.index_version == 4 for f in produced[20:] for r in scored[f.frame_id])
        st = running.worker.status()
        ok, detail = st.ready, st.detail
        assert ok and "refused" not in detail, detail
    finally:
        running.close()
    assert running.exit_code == [0]


def test_without_its_indexes_the_worker_pauses_then_scores_routed_per_source(
    kafka_settings, redis_url, setup, unique
):  # fmt: skip
    topics, prefix, _ = setup
    cfg = h.worker_config(kafka_settings, redis_url, prefix, topics, unique, routes=("cam-b*=idxB",))
    running = h.start_worker(cfg)
    reg = running.worker.registry
    try:
        produced = interleave(h.frames("cam-a", 10), h.frames("cam-b1", 10), h.frames("cam-b2", 10))
        h.produce_frames(kafka_settings, topics.frames, produced)
        assert h.wait_assigned(running)
        assert h.wait_until(lambda: sample(reg, "framewatch_consumption_paused") == 1, 10)
        h.publish_index(redis_url, prefix, "idx")  # the default only: idxB still missing, still paused
        time.sleep(3)
        st = running.worker.status()
        ok, detail = st.ready, st.detail
        assert not ok and "indexes: idx@1;" in detail and "waiting for index idxB to load" in detail, detail
        assert sample(reg, "framewatch_frames_consumed_total") == 0
        assert not h.dead_letters(kafka_settings, topics.dead_letters)
        assert not h.scores(kafka_settings, topics.scores)

        h.publish_index(redis_url, prefix, "idxB", seed=5)
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 60)
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        for f in produced:
            want = "idxB" if f.source.startswith("cam-b") else "idx"
            assert {r.index_name for r in scored[f.frame_id]} == {want}, f.frame_id
        assert sample(reg, "framewatch_consumption_paused") == 0
        st = running.worker.status()
        ok, detail = st.ready, st.detail
        assert ok, detail
    finally:
        running.close()
    assert running.exit_code == [0]


# -- the broker goes away ------------------------------------------------------------------------
@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_broker_outage_does_not_crash_the_worker(redis_url, unique, client):
    """With either client: consuming and the outputs (score records through that client's producer)."""
    from wire.settings import KafkaSettings

    if client == "confluent":
        pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed (pip install '.[confluent]')")
    with LocalBroker() as own_broker:
        kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
        topics = h.topics_for(unique, kafka, partitions=2)
        prefix = f"t-{unique}"
        h.publish_index(redis_url, prefix, "idx")
        running = h.start_worker(h.worker_config(kafka, redis_url, prefix, topics, unique, drain_timeout_s=5.0,
                                                 kafka_client=client))  # fmt: skip
        try:
            before = h.frames("camA", 10)
            h.produce_frames(kafka, topics.frames, before)
            assert h.wait_for_ids(kafka, topics, ids(before), 60)
            assert running.worker.status().kafka_client == client  # consumer and outputs' producer alike
            own_broker.stop()
            assert h.wait_until(lambda: not running.worker.status().ready, 30)
            time.sleep(8)  # longer than the drain timeout: still no exit
            assert running.alive()
            assert running.worker.status().alive
            own_broker.start()  # memory storage: an empty broker on the same port
            h.topics_for(unique, kafka, partitions=2)
            after = h.frames("camA", 10, start=100)
            h.produce_frames(kafka, topics.frames, after)
            assert h.wait_for_ids(kafka, topics, ids(after), 90)
            assert running.alive()
        finally:
            running.close(timeout=30)
