"""Fault tests for issue 8, "a worker that never wedges", on a real broker and a real Redis.

Each test produces frames with known ids, does what wedged the worker before
(a rebalance, a broker restart, a poison record, an oversized output, bad index
data, no broker at all, a stuck call), then reads the score and dead-letter
topics from outside: every produced id is scored or dead-lettered. Where the
worker must report trouble, the test asks GET /readyz, as an orchestrator would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from typing import Any

import numpy as np
import pytest
import redis

from framewatch.services import LocalBroker, free_port
from index_store.embedder import Embedder
from index_store.errors import CorruptIndex
from index_store.keys import Keys
from index_store.knn import build_exact
from index_store.repository import IndexMeta, IndexRepository
from tests.conftest import png_bytes
from tests.integration import harness as h
from wire import topics as t
from wire.records import FrameRecord
from wire.settings import KafkaSettings
from worker.loop import EXIT_STALLED, Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ids, interleave = h.ids, h.interleave




get = h.http_get


def readyz(running: h.RunningWorker) -> tuple[int, str]:
    assert running.worker.health is not None
    return get(running.worker.health.port, "/readyz")


def metric(running: h.RunningWorker, sample: str) -> float:
    assert running.worker.health is not None
    return h.metric_value(get(running.worker.health.port, "/metrics")[1], sample)


def wait_port(running: h.RunningWorker, timeout: float = 30.0) -> int:
    assert h.wait_until(lambda: running.worker.health is not None, timeout, 0.1)
    assert running.worker.health is not None
    return running.worker.health.port


class NotUtf8Key(str):
    """A header key that kafka-python writes as raw bytes that are not UTF-8 (as a non-Python producer may)."""

    def __new__(cls, raw: bytes) -> "NotUtf8Key":
        made = super().__new__(cls, raw.decode("latin-1"))
        made.raw = raw  # type: ignore[attr-defined]
        return made

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:  # type: ignore[override]
        return self.raw  # type: ignore[attr-defined, no-any-return]


def diagnose(settings: KafkaSettings, topics: t.Topics, group: str, missing: list[str]) -> str:
    """Where the missing frames sit, what the group committed, and who scored their neighbours."""
    from kafka import KafkaConsumer, TopicPartition

    where = {}
    for m in h.read_topic(settings, topics.frames):
        fid = dict(m.headers).get(t.H_FRAME_ID, b"").decode()
        if fid in missing:
            where[fid] = (m.partition, m.offset)
    consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **settings.client_kwargs())
    committed = {p: consumer.committed(TopicPartition(topics.frames, p)) for p in range(4)}
    consumer.close()
    near = []
    for r in h.scores(settings, topics.scores):
        for p, o in where.values():
            if r.frame_partition == p and abs(r.frame_offset - o) <= 3:
                near.append((r.frame_offset, r.frame_id, r.worker))
    return f"where {where}; committed {committed}; neighbours {sorted(near)}"


@pytest.fixture
def setup(kafka_settings, redis_url, unique):  # type: ignore[no-untyped-def]
    topics = h.topics_for(unique, kafka_settings, partitions=4)
    return topics, f"t-{unique}", f"g-{unique}"


# -- 1. scale out and in mid-stream ----------------------------------------------------------
def test_workers_join_and_leave_mid_stream_nothing_wedges(kafka_settings, redis_url, setup, client):
    topics, prefix, group = setup
    h.publish_index(redis_url, prefix, "idx")
    produced = interleave(*[h.frames(src, 44) for src in h.sources_covering(4)])  # ~22 s at 8 frames/s
    a = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
    b = c = None
    try:
        assert h.wait_until(lambda: bool(a.assigned()), 60), a.output()
        # the last third waits until B and C are in the group, however long their start took,
        # so that B leaves mid-stream: while that third is being produced and scored
        feeder = h.Feeder(kafka_settings, topics.frames, produced, rate=8, hold_at=len(produced) * 2 // 3).start()
        t0 = time.monotonic()
        time.sleep(5)
        b = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
        time.sleep(5)
        c = h.worker_process(kafka_settings, redis_url, prefix, topics, group, client=client)
        assert h.wait_until(lambda: bool(b.assigned()) and bool(c.assigned()), 60), b.output() + c.output()
        time.sleep(max(0.0, t0 + 15 - time.monotonic()))
        feeder.release()
        time.sleep(1.0)
        assert b.terminate(timeout=60) == 0, b.output()
        feeder.join()
        if not h.wait_for_ids(kafka_settings, topics, ids(produced), 60):
            scored, letters = h.outcome(kafka_settings, topics)
            missing = sorted(ids(produced) - set(scored) - set(letters))
            report = [f"{len(missing)} missing: {missing[:12]}"]
            report += [f"{w.get('/readyz')}\n{w.output()}" for w in (a, c)] + [b.output()]
            report.append(diagnose(kafka_settings, topics, group, missing))
            raise AssertionError("\n---\n".join(report))
        h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        assert "Cannot block on net.run()" not in a.output() + b.output() + c.output()
        for w in (a, c):
            assert w.alive(), w.output()
            assert h.wait_until(lambda w=w: w.get("/readyz")[0] == 200, 30), w.get("/readyz")
        assert sorted(a.assigned() + c.assigned()) == [0, 1, 2, 3]
    finally:
        for w in (a, b, c):
            if w is not None:
                w.close()


# -- 2. the broker restarts, twice ----------------------------------------------------------------
def test_broker_restarted_twice_mid_stream_worker_recovers_each_time(redis_url, unique, client):
    with LocalBroker(port=free_port()) as own_broker:
        kafka = KafkaSettings(bootstrap=own_broker.bootstrap)
        topics = h.topics_for(unique, kafka, partitions=2)
        prefix = f"t-{unique}"
        h.publish_index(redis_url, prefix, "idx")
        worker = h.worker_process(kafka, redis_url, prefix, topics, f"g-{unique}", client=client)
        all_ids: set[str] = set()
        try:
            assert h.wait_until(lambda: worker.get("/readyz")[0] == 200, 60), worker.output()
            for life in range(3):
                # memory storage: only frames produced in this life of the broker can be required
                batch = interleave(
                    h.frames("camA", 8, start=100 * life), h.frames("camB", 8, start=100 * life)
                )
                all_ids |= ids(batch)
                h.produce_frames(kafka, topics.frames, batch)
                if life == 2:
                    assert h.wait_for_ids(kafka, topics, ids(batch), 90), worker.output()
                    break
                # mid-stream: stop the broker as soon as scoring has started
                assert h.wait_until(lambda: bool(h.scores(kafka, topics.scores)), 60), worker.output()
                own_broker.stop()
                assert h.wait_until(lambda: worker.get("/readyz")[0] == 503, 30), worker.get("/readyz")
                assert "broker: unreachable" in worker.get("/readyz")[1]
                time.sleep(3)
                assert worker.alive(), worker.output()
                assert worker.get("/healthz")[0] == 200
                own_broker.start()
                h.topics_for(unique, kafka, partitions=2)
                assert h.wait_until(lambda: worker.get("/readyz")[0] == 200, 60), worker.get("/readyz")
            scored, letters = h.outcome(kafka, topics)
            assert set(scored) | set(letters) <= all_ids
            assert worker.get("/readyz")[0] == 200
            assert worker.alive(), worker.output()
        finally:
            worker.close()


# -- 3. a poison header key -----------------------------------------------------------------------
def test_header_key_not_utf8_is_dead_lettered_once_and_frames_around_it_scored(
    kafka_settings, redis_url, setup, unique, client):  # fmt: skip
    topics, prefix, _ = setup
    h.publish_index(redis_url, prefix, "idx")
    before, after, later = h.frames("camP", 6), h.frames("camP", 6, start=10), h.frames("camP", 4, start=20)
    poison_value = png_bytes(99)
    poison = (b"camP", poison_value, [(t.H_FRAME_ID, b"poison-1"), (NotUtf8Key(b"bad\xff\xfekey"), b"v")])
    cfg = h.worker_config(kafka_settings, redis_url, prefix, topics, unique, kafka_client=client)
    running = h.start_worker(cfg)
    try:
        assert h.wait_assigned(running)
        offsets = h.produce_messages(kafka_settings, topics.frames, [f.encode() for f in before] + [poison]
                                     + [f.encode() for f in after])  # fmt: skip
        assert len({p for p, _ in offsets}) == 1, "all on one partition: the poison sits between good frames"
        produced = ids(before) | ids(after) | {"poison-1"}
        assert h.wait_for_ids(kafka_settings, topics, produced, 60)
        _, letters = h.assert_nothing_lost(kafka_settings, topics, produced, {"poison-1"})
        (letter,) = letters["poison-1"]
        assert letter.reason == "malformed-header", letter.detail
        assert letter.value == poison_value
        assert (letter.partition, letter.offset) == offsets[len(before)]
        assert readyz(running)[0] == 200
    finally:
        running.close()
    assert running.exit_code == [0]

    h.restart_resumes_from_commits(cfg, kafka_settings, topics, later, produced, "poison-1")  # same group


# -- 4. outputs that would not fit ------------------------------------------------------------------
def test_oversized_origin_and_oversized_dead_letter_do_not_hold_delivery(
    kafka_settings, redis_url, setup, unique, client):
    topics, prefix, _ = setup
    h.publish_index(redis_url, prefix, "idx")
    # The test's producer may send more than the worker's limit (20 MiB); Tansu accepts 40 MiB messages.
    big = KafkaSettings(bootstrap=kafka_settings.bootstrap, max_message_bytes=32 * 1024 * 1024)
    huge_origin = FrameRecord(frame_id="huge-origin", source="camO", sequence=0, capture_time=time.time(),
                              image=png_bytes(5), content_type="image/png")  # fmt: skip
    key, value, headers = huge_origin.encode()
    # 3.6 MB of origin (control characters would make it a malformed-header dead letter: headers are data)
    headers = [(k, v) for k, v in headers if k != t.H_ORIGIN] + [(t.H_ORIGIN, b"o" * 3_600_000)]
    huge_value = np.random.default_rng(0).bytes(20 * 1024 * 1024)  # not an image, and 20 MiB
    huge_dead = (
        b"camO",
        huge_value,
        [("x-note", b"n" * 100_000)],
    )  # no frame id: topic/partition/offset names it
    after = h.frames("camO", 6, start=1)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, kafka_client=client))
    try:
        assert h.wait_assigned(running)
        offsets = h.produce_messages(big, topics.frames, [(key, value, headers), huge_dead]
                                     + [f.encode() for f in after])  # fmt: skip
        dead_id = f"{topics.frames}/{offsets[1][0]}/{offsets[1][1]}"
        produced = {"huge-origin", dead_id} | ids(after)
        assert h.wait_for_ids(kafka_settings, topics, produced, 90)
        scored, letters = h.assert_nothing_lost(kafka_settings, topics, produced, {dead_id})
        (rec,) = scored["huge-origin"]
        assert len(rec.origin or "") <= t.MAX_ORIGIN_CHARS + 100
        (letter,) = letters[dead_id]
        assert letter.payload_omitted and letter.value is None and letter.reason
        raw = [m for m in h.read_topic(kafka_settings, topics.dead_letters)]
        (msg,) = [m for m in raw if dict(m.headers).get(t.H_ERROR_OFFSET) == str(offsets[1][1]).encode()]
        got = dict(msg.headers)
        assert got[t.H_ERROR_PAYLOAD_SIZE] == str(len(huge_value)).encode()
        assert got[t.H_ERROR_PAYLOAD_SHA256] == hashlib.sha256(huge_value).hexdigest().encode()
        assert readyz(running)[0] == 200
        # counted once the broker acknowledged them: exactly what reached the topics
        counted = lambda: metric(running, 'framewatch_frames_scored_total{index="idx"}')  # noqa: E731
        assert h.wait_until(lambda: counted() == len(scored), 15), counted()
        assert metric(running, f'framewatch_dead_letters_total{{reason="{letter.reason}"}}') == 1
    finally:
        running.close()
    assert running.exit_code == [0]


# -- 5. malformed index data, each followed by a good version ------------------------------------------
def test_malformed_index_data_refused_with_reason_good_versions_still_load(
    kafka_settings, redis_url, setup, unique
):
    topics, prefix, _ = setup
    h.publish_index(redis_url, prefix, "idx", seed=0)
    client = redis.Redis.from_url(redis_url)
    keys = Keys(prefix)
    running = h.start_worker(
        h.worker_config(kafka_settings, redis_url, prefix, topics, unique, index_poll_s=1.0)
    )
    reg = running.worker.registry
    version = lambda: reg.get_sample_value("framewatch_index_version", {"index": "idx"})  # noqa: E731
    good_vectors = np.random.default_rng(1).normal(size=(20, h.SMALL_SPEC.dim)).astype(np.float32)
    odd_spec = {**h.SMALL_SPEC.to_dict(), "field_from_the_future": 1}

    def set_active(value: str) -> None:
        client.set(keys.active("idx"), value)

    def active_is_a_list() -> None:
        client.delete(keys.active("idx"))
        client.rpush(keys.active("idx"), "1")

    faults: list[tuple[str, Any, str]] = [
        ("active pointer abc", lambda: set_active("abc"), "abc"),
        ("active key a list", active_is_a_list, "not what framewatch wrote"),
        (
            "unknown spec field",
            lambda: h.write_raw_version(
                redis_url, prefix, "idx", {**h.raw_meta(), "spec": odd_spec}, good_vectors.tobytes()
            ),
            "field_from_the_future",
        ),  # fmt: skip
        (
            "kind bogus",
            lambda: h.write_raw_version(
                redis_url, prefix, "idx", h.raw_meta(kind="bogus"), good_vectors.tobytes()
            ),
            "bogus",
        ),  # fmt: skip
        (
            "no vectors",
            lambda: h.write_raw_version(redis_url, prefix, "idx", h.raw_meta(n=0), b""),
            "no vectors",
        ),
        (
            "NaN threshold",
            lambda: h.write_raw_version(
                redis_url, prefix, "idx", h.raw_meta(threshold=float("nan")), good_vectors.tobytes()
            ),
            "threshold",
        ),  # fmt: skip
    ]
    cams = [h.frames("camA", 30), h.frames("camB", 30)]
    produced = interleave(*cams)
    good_versions = {1}
    try:
        assert h.wait_assigned(running)
        port = wait_port(running)
        # the group is joined before the embedder is built: serving starts once both are done
        assert h.wait_until(lambda: get(port, "/readyz")[0] == 200, 60), get(port, "/readyz")
        feeder = h.Feeder(kafka_settings, topics.frames, produced, rate=6).start()
        for what, fault, reason in faults:
            fault()
            assert h.wait_until(lambda r=reason: r in get(port, "/readyz")[1], 15), (
                what,
                get(port, "/readyz"),
            )
            assert running.alive()
            good = h.publish_index(redis_url, prefix, "idx", seed=len(good_versions) + 1)
            good_versions.add(good.version)
            assert h.wait_until(lambda v=good.version: version() == v, 15), (what, get(port, "/readyz"))
            status, body = get(port, "/readyz")
            assert status == 200 and f"idx@{good.version}" in body and reason not in body, (what, body)
        feeder.join()
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 90)
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        used = {r.index_version for recs in scored.values() for r in recs}
        assert used <= good_versions and len(used) >= 3, used
    finally:
        running.close()
        client.close()
    assert running.exit_code == [0]


def test_publish_refuses_an_empty_index_and_a_nan_threshold(redis_url, unique):
    repo = IndexRepository(redis.Redis.from_url(redis_url), f"t-{unique}")
    spec = h.SMALL_SPEC
    empty = build_exact(np.zeros((0, spec.dim), np.float32), 2)
    meta = IndexMeta(name="idx", kind="exact", k=2, dim=spec.dim, n_vectors=0, spec=spec.to_dict())
    with pytest.raises(CorruptIndex, match="no vectors"):
        repo.publish(meta, empty)
    index = build_exact(np.random.default_rng(0).normal(size=(5, spec.dim)).astype(np.float32), 2)
    with pytest.raises(CorruptIndex, match="threshold"):
        repo.publish(IndexMeta(name="idx", kind="exact", k=2, dim=spec.dim, n_vectors=5, spec=spec.to_dict(),
                               threshold=float("nan")), index)  # fmt: skip
    assert repo.active_version("idx") is None  # nothing was written


# -- 6. health while the broker is down ----------------------------------------------------------------
def test_health_is_served_while_no_broker_answers(redis_url, unique):
    nowhere = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}")
    topics = t.Topics(frames=f"frames-{unique}", scores=f"scores-{unique}", dead_letters=f"dlq-{unique}")
    h.publish_index(redis_url, f"t-{unique}", "idx")
    worker = h.worker_process(nowhere, redis_url, f"t-{unique}", topics, f"g-{unique}")
    try:
        worker.port(timeout=30)
        assert worker.get("/healthz")[0] == 200, worker.output()
        assert worker.get("/readyz")[0] == 503
        # "connecting" while the first attempt is under way, "unreachable" once one has failed (~10 s)
        assert h.wait_until(lambda: "broker: unreachable" in worker.get("/readyz")[1], 40), worker.get("/readyz")
        status, body = worker.get("/readyz")
        assert status == 503 and "broker: unreachable" in body, body
        assert "framewatch_ready 0.0" in worker.get("/metrics")[1]
        # a connection attempt gives up after ~10 s (topic creation times out); the worker retries, and stays up
        reconnects = lambda: worker.metric('framewatch_reconnects_total{dependency="kafka"}')  # noqa: E731
        assert h.wait_until(lambda: reconnects() >= 1, 40), worker.output()
        assert worker.alive(), worker.output()
        assert worker.get("/healthz")[0] == 200
        assert worker.get("/readyz")[0] == 503
    finally:
        worker.close()


# -- 7. the watchdog ------------------------------------------------------------------------------
def test_a_stuck_call_trips_the_watchdog_then_the_worker_gives_up(kafka_settings, redis_url, setup, unique):
    topics, prefix, _ = setup
    h.publish_index(redis_url, prefix, "idx")
    release, blocked, gave_up = threading.Event(), threading.Event(), threading.Event()
    stuck_size = (80, 60)
    real = Embedder(h.SMALL_SPEC)  # built here, so that building it is not the call the watchdog times

    class BlockingEmbedder:
        """The real embedder, except that it blocks on the frame of size ``stuck_size`` until released."""

        def embed(self, images: list[Any]) -> Any:
            if any(getattr(im, "size", None) == stuck_size for im in images):
                blocked.set()
                release.wait()
            return real.embed(images)

    base = h.worker_config(kafka_settings, redis_url, prefix, topics, unique)
    cfg = dataclasses.replace(base, stall_timeout_s=2.0, stall_exit_s=5.0)
    worker = Worker(cfg, registry=h.CollectorRegistry(), embedder_factory=lambda spec: BlockingEmbedder(),
                    on_give_up=lambda stall: gave_up.set())  # fmt: skip
    stop, code = threading.Event(), []
    thread = threading.Thread(target=lambda: code.append(worker.run(stop)), daemon=True)
    thread.start()
    running = h.RunningWorker(worker, stop, thread)
    produced = h.frames("camS", 3) + h.frames(
        "camS", 1, start=3, image=lambda i: png_bytes(i, size=stuck_size)
    )
    try:
        assert h.wait_assigned(running)
        port = wait_port(running)
        h.produce_frames(kafka_settings, topics.frames, produced)
        assert blocked.wait(60)
        assert h.wait_until(lambda: get(port, "/readyz")[0] == 503, 15)
        assert "loop has been in score" in get(port, "/readyz")[1]
        assert get(port, "/healthz")[0] == 503
        body = get(port, "/metrics")[1]
        assert h.metric_value(body, "framewatch_stalled") == 1
        assert h.metric_value(body, 'framewatch_watchdog_trips_total{reason="loop-stuck"}') == 1
        assert gave_up.wait(30)
    finally:
        release.set()
        thread.join(60)
    assert not thread.is_alive() and code == [EXIT_STALLED]

    # the orchestrator restarts it: the frames it held are scored by the next one
    again = h.start_worker(base)
    try:
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 60)
        h.assert_nothing_lost(kafka_settings, topics, ids(produced))
    finally:
        again.close()
    assert again.exit_code == [0]
