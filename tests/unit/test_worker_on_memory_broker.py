"""The worker's behaviour on the in-memory broker (worker/memory_broker.py): a real Worker, a real Redis,
its loop stepped by the test, its clock injected. What the user would notice: every frame ends as one
score record or one dead letter, commits never pass a frame whose output is not acknowledged, consumption
holds (and says why) while it cannot score or deliver, and the watchdog reports a stuck scorer.

The embed stage and the scorer build run on their own threads, as in production; the cases step the loop
until what they wait for holds (a bound on the steps, not a sleep)."""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any, Callable, Optional

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.integration import harness as h
from wire.records import DeadLetter, FrameRecord, ScoreRecord
from wire.settings import KafkaSettings
from wire.topics import Topics
from worker.kafka_port import Partition
from worker.loop import Worker
from worker.memory_broker import MemoryBroker
from worker.watchdog import Stall

DIM = h.SMALL_SPEC.dim
MAX_STEPS = 20_000


class Clock:
    """The worker's monotonic clock: moves only when the test says (and a little on each step)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, s: float) -> None:
        self.now += s


class DecodingExtractor:
    """Decodes each frame for real (bad bytes fail as in production), embeds as zeros; ``gate``, when
    given, holds every embed until it is set (a stuck model)."""

    def __init__(self, gate: Optional[threading.Event] = None) -> None:
        self.gate = gate

    def prepare(self, record: FrameRecord) -> Any:
        from worker.decode import decode_image

        decode_image(record.image, record.content_type)
        return None

    def embed(self, prepared: Any) -> np.ndarray:
        if self.gate is not None:
            self.gate.wait(30)
        return np.zeros((len(prepared), DIM), dtype=np.float32)


class Site:
    """One group of workers on one in-memory broker and the session's Redis."""

    def __init__(self, redis_url: str, unique: str, partitions: int = 2, index: bool = True, **cfg: Any) -> None:
        self.clock = Clock()
        self.broker = MemoryBroker(clock=self.clock, wall_clock=time.time)
        self.topics = Topics(frames=f"frames-{unique}", scores=f"scores-{unique}", dead_letters=f"dlq-{unique}")
        for topic in (self.topics.frames, self.topics.scores, self.topics.dead_letters):
            self.broker.create_topic(topic, partitions)
        self.redis_url, self.prefix, self.unique = redis_url, f"t-{unique}", unique
        self.cfg = h.worker_config(KafkaSettings(bootstrap="memory:0"), redis_url, self.prefix, self.topics, unique,
                                   **{"max_wait_s": 0.2, "index_poll_s": 0.05, **cfg})  # fmt: skip
        self.workers: list[Worker] = []
        if index:
            self.publish_index()

    def publish_index(self) -> None:
        h.publish_index(self.redis_url, self.prefix, "idx", threshold=1e9)

    def worker(self, extractor: Any = None, **kw: Any) -> Worker:
        made = extractor or DecodingExtractor()
        w = Worker(self.cfg, registry=CollectorRegistry(), embedder_factory=lambda spec: made, clock=self.clock,
                   kafka=self.broker.client(max_poll_interval_s=60.0), **kw)  # fmt: skip
        w.start()
        self.workers.append(w)
        return w

    def publish(self, frames: list[FrameRecord], timestamp_ms: Optional[int] = None) -> None:
        for f in frames:
            key, value, headers = f.encode()
            self.broker.publish(self.topics.frames, key, value, headers, timestamp_ms=timestamp_ms)

    def step(self, until: Callable[[], bool], workers: Optional[list[Worker]] = None, tick: float = 0.05) -> bool:
        """Step every worker in turn, the clock moving ``tick`` per round, until ``until()``."""
        for _ in range(MAX_STEPS):
            if until():
                return True
            for w in workers or self.workers:
                w.step()
            self.clock.advance(tick)
            time.sleep(0)  # let the embed and build threads run
        return until()

    def scores(self) -> list[ScoreRecord]:
        return [ScoreRecord.decode(r.value) for r in self.broker.records(self.topics.scores)]

    def letters(self) -> list[DeadLetter]:
        return [DeadLetter.decode(r.key, r.value, r.headers) for r in self.broker.records(self.topics.dead_letters)]

    def outputs(self) -> set[str]:
        return {s.frame_id for s in self.scores()} | {h.letter_id(d) for d in self.letters()}

    def committed(self) -> dict[int, Optional[int]]:
        group = self.cfg.group_id
        return {p: self.broker.committed(group, Partition(self.topics.frames, p)) for p in range(2)}

    def ends(self) -> dict[int, int]:
        by_partition: dict[int, int] = {}
        for r in self.broker.records(self.topics.frames):
            by_partition[r.partition] = max(by_partition.get(r.partition, 0), r.offset + 1)
        return by_partition

    def all_committed(self) -> bool:
        return all(self.committed().get(p) == end for p, end in self.ends().items())

    def close(self) -> None:
        for w in self.workers:
            w.close()


@pytest.fixture
def site(redis_url, unique):  # type: ignore[no-untyped-def]
    sites: list[Site] = []

    def make(**kw: Any) -> Site:
        sites.append(Site(redis_url, unique, **kw))
        return sites[-1]

    yield make
    for s in sites:
        s.close()


def frames_of(*sources: str, n: int = 6) -> list[FrameRecord]:
    return h.interleave(*(h.frames(s, n) for s in sources))


def sources_covering(partitions: int, prefix: str = "cam") -> list[str]:
    """One source per partition, by the in-memory broker's key hash (crc32)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        found.setdefault(zlib.crc32(f"{prefix}{i}".encode()) % partitions, f"{prefix}{i}")
        i += 1
    return [found[p] for p in range(partitions)]


def test_every_frame_ends_as_one_score_and_the_commits_reach_the_end_of_each_partition(site):
    s = site()
    w = s.worker()
    sent = frames_of(*sources_covering(2), n=10)
    s.publish(sent)
    assert s.step(lambda: s.all_committed() and len(s.scores()) == len(sent))
    assert sorted(r.frame_id for r in s.scores()) == sorted(h.ids(sent))  # each once
    assert w.status().ready and w.status().partitions == (0, 1) and w.status().kafka_client == "memory"


def test_a_member_joining_mid_batch_takes_half_the_partitions_and_every_frame_is_still_scored(site):
    s = site(max_batch=64, max_wait_s=30.0)  # the first member's batch fills and waits
    a = s.worker()
    sent = frames_of(*sources_covering(2), n=8)
    s.publish(sent)
    assert s.step(lambda: a.status().depths["batch"] == len(sent))  # all of them buffered, none scored
    b = s.worker()
    assert s.step(lambda: a.status().partitions and b.status().partitions and
                  len(a.status().partitions) == 1 and len(b.status().partitions) == 1)  # fmt: skip
    assert a.status().depths["batch"] < len(sent)  # the revoked partition's frames were dropped, not scored
    s.clock.advance(31)  # the batch deadline passes
    assert s.step(lambda: s.all_committed() and s.outputs() >= h.ids(sent), tick=1.0)
    assert {r.frame_id for r in s.scores()} == h.ids(sent) and not s.letters()


def test_outputs_in_flight_when_their_partition_is_revoked_are_never_committed_past(site):
    s = site(max_batch=4)
    a = s.worker()
    sent = frames_of(*sources_covering(2), n=8)
    s.broker.faults.hold_acks()
    s.publish(sent)
    assert s.step(lambda: a.status().depths["deliver"] >= 4)  # scored; the broker has not acknowledged
    b = s.worker()
    assert s.step(lambda: len(b.status().partitions) == 1, tick=1.0)
    assert all(c in (None, 0) for c in s.committed().values())  # nothing unacknowledged was committed
    s.broker.faults.release_acks()
    assert s.step(lambda: s.all_committed() and s.outputs() >= h.ids(sent), tick=1.0)
    scored = [r.frame_id for r in s.scores()]
    assert set(scored) == h.ids(sent)  # at least once: a revoked frame may be scored again by its new owner


def test_consumption_holds_until_the_index_loads_and_while_outputs_are_not_acknowledged(site):
    s = site(index=False)
    w = s.worker()
    s.publish(frames_of("camA", n=4))
    assert s.step(lambda: w.status().hold is not None and w.status().partitions)
    assert "waiting for index idx" in (w.status().hold or "") and not w.status().ready
    for _ in range(200):
        w.step()
    assert not s.scores() and all(c in (None, 0) for c in s.committed().values())  # nothing consumed meanwhile
    s.publish_index()
    assert s.step(lambda: len(s.scores()) == 4)
    s.broker.faults.fail_next_sends(6)  # the next 4 outputs fail, and the first two retries
    later = h.frames("camA", 4, start=10)
    s.publish(later)
    assert s.step(lambda: (w.status().hold or "").startswith("outputs not acknowledged"))
    assert s.step(lambda: s.all_committed() and s.outputs() >= h.ids(later), tick=0.5)  # retried, none lost
    assert w.status().hold is None


def test_poison_records_become_dead_letters_with_their_reason_and_the_frames_around_them_are_scored(site):
    s = site(partitions=1)
    w = s.worker()
    good = h.frames("camA", 5)
    s.publish(good[:2])  # offsets 0, 1
    s.broker.publish(s.topics.frames, b"camA", b"not an image", [("frame_id", b"bad-image")])  # 2
    s.broker.publish(s.topics.frames, b"camA", None, [])  # 3: no value at all
    s.publish(good[2:4])  # 4, 5
    s.broker.faults.unparseable(s.topics.frames, 0, 5)  # the client cannot parse the record at offset 5
    s.publish(good[4:])  # 6
    assert s.step(lambda: s.all_committed())
    assert {r.frame_id for r in s.scores()} == h.ids(good) - {"camA-3"}
    reasons = {(d.offset, d.reason) for d in s.letters()}
    assert reasons == {(2, "undecodable"), (3, "empty-value"), (5, "unparseable-record")}, reasons
    unparseable = next(d for d in s.letters() if d.reason == "unparseable-record")
    assert unparseable.value is None and unparseable.partition == 0
    assert w.status().ready


def test_a_partition_without_commits_starts_at_the_workers_start_and_that_start_is_committed(site):
    s = site(partitions=1, start_from="latest", started_at=time.time())
    old = h.frames("camA", 5)
    s.publish(old, timestamp_ms=int((time.time() - 120) * 1000))  # published two minutes before the start
    new = h.frames("camA", 3, start=100)
    s.publish(new)
    w = s.worker()
    assert s.step(lambda: s.all_committed() and len(s.scores()) == 3)
    assert {r.frame_id for r in s.scores()} == h.ids(new)  # the old ones skipped ...
    skipped = w.registry.get_sample_value("framewatch_frames_skipped_total")
    assert skipped == 5  # ... and counted


def test_a_restarted_worker_resumes_from_the_commits_and_scores_nothing_twice(site):
    s = site()
    first = s.worker()
    sent = frames_of(*sources_covering(2), n=5)
    s.publish(sent)
    assert s.step(lambda: s.all_committed() and len(s.scores()) == len(sent))
    first.drain()
    first.close()
    s.workers.remove(first)
    later = frames_of(*sources_covering(2, prefix="late"), n=3)
    s.publish(later)
    s.worker()
    assert s.step(lambda: s.all_committed() and s.outputs() >= h.ids(later), tick=1.0)
    scored = [r.frame_id for r in s.scores()]
    assert len(scored) == len(set(scored)) == len(sent) + len(later)


def test_the_watchdog_reports_a_scorer_stuck_in_the_model_and_gives_up(site):
    gate = threading.Event()
    gave_up: list[Stall] = []
    s = site(partitions=1, max_batch=2, stall_timeout_s=30.0, stall_exit_s=60.0)
    w = s.worker(DecodingExtractor(gate), on_give_up=gave_up.append)
    s.publish(h.frames("camA", 2))
    try:
        assert s.step(lambda: w.status().depths["embed"] == 0 and w.stage.in_flight() == 1)
        s.clock.advance(31)
        stall = w.watchdog_thread.tick()
        assert stall is not None and stall.reason == "loop-stuck" and "score" in stall.detail
        assert not w.status().ready and "score" in w.status().detail
        s.clock.advance(60)
        w.watchdog_thread.tick()
        assert gave_up and gave_up[0].reason == "loop-stuck"  # the CLI exits 70 here: an orchestrator restarts it
    finally:
        gate.set()
