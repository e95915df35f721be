"""Candidate versions scored in the shadow: the record carries their verdicts, alerts ignore them, counts add up.

No Redis here: the repository is a small stand-in with the three reads ``Candidates.refresh`` makes
(tests/integration/test_shadow.py runs the same through a real broker and Redis).
"""

from __future__ import annotations

import json
import time
from typing import Optional

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from alerting.config import IncidentConfig, NoiseConfig
from alerting.incidents import IncidentTracker
from alerting.noise import NORMAL, NoiseFilter
from framewatch.index_status_cmd import render, serving_workers
from index_store.errors import CorruptIndex, UnknownIndex
from index_store.knn import build_exact
from index_store.repository import IndexMeta, VerdictCount
from index_store.spec import EmbedderSpec
from wire.errors import ScoreDecodeError
from wire.records import FrameRecord, ScoreRecord
from worker.candidates import Candidates
from worker.extract import NullExtractor
from worker.indexes import LoadedIndex
from worker.inflight import InFlight
from worker.metrics import WorkerMetrics
from worker.routing import Routing
from worker.scoring import Scorer
from worker.verdicts import VerdictTally

SPEC = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)
DIM = SPEC.dim


def version(n: int, offset: float, threshold: float, spec: EmbedderSpec = SPEC) -> tuple[IndexMeta, object]:
    """Index ``idx`` version ``n``: vectors around ``offset`` (frames embed to zeros here)."""
    vectors = (np.random.default_rng(n).normal(size=(10, DIM)) * 0.01 + offset).astype(np.float32)
    meta = IndexMeta(name="idx", kind="exact", k=2, dim=DIM, n_vectors=10, spec=spec.to_dict(), version=n,
                     threshold=threshold)  # fmt: skip
    return meta, build_exact(vectors)


class Repo:
    """The reads Candidates.refresh makes, over a dict of versions."""

    def __init__(self) -> None:
        self.versions: dict[int, tuple[IndexMeta, object]] = {}
        self.listed: list[int] = []
        self.corrupt: set[int] = set()

    def candidates(self, name: str) -> list[int]:
        return sorted(self.listed)

    def load(self, name: str, v: Optional[int] = None) -> tuple[IndexMeta, object]:
        if v in self.corrupt:
            raise CorruptIndex(f"index {name!r} version {v}: vectors fail their checksum")
        if v not in self.versions:
            raise UnknownIndex(name, v)
        return self.versions[v]

    def load_adapted(self, meta: IndexMeta) -> None:
        return None


def frames(n: int, source: str = "cam") -> list[InFlight]:
    return [InFlight.decoded(FrameRecord(f"f{i}", source, i, time.time(), b"x"), None, offset=i) for i in range(n)]


def setup(active_threshold: float = 1e9) -> tuple[Scorer, Candidates, Repo, dict[str, LoadedIndex], VerdictTally]:
    meta, index = version(1, 0.0, active_threshold)
    active = {"idx": LoadedIndex(meta, index)}
    tally = VerdictTally(clock=lambda: 120.0)
    cands = Candidates(["idx"], lambda: SPEC, tally, WorkerMetrics(CollectorRegistry()))
    return Scorer(NullExtractor(DIM), Routing.parse("idx"), shadow=cands), cands, Repo(), active, tally


def test_records_carry_each_candidates_verdict_on_the_same_embedding_and_keep_the_active_one():
    scorer, cands, repo, active, tally = setup()
    repo.versions[2] = version(2, 10.0, threshold=1.0)  # far from the frames: anomalous
    repo.versions[3] = version(3, 0.0, threshold=1e9)  # near: normal
    repo.listed = [2, 3]
    cands.refresh(repo)  # type: ignore[arg-type]
    records = scorer.score(frames(3), active)
    for r in records:
        assert (r.index_version, r.is_anomaly) == (1, False)  # the active verdict, unchanged
        assert [(s["version"], s["is_anomaly"]) for s in r.shadow] == [(2, True), (3, False)]
        assert r.shadow[0]["threshold"] == 1.0 and r.shadow[0]["score"] > 1.0
        assert ScoreRecord.decode(r.encode()[1]) == r  # the verdicts travel on the topic
    counts = tally.take()
    assert counts[("idx", 1, 2)] == VerdictCount(3, 0, 0)
    assert counts[("idx", 2, 2)] == VerdictCount(3, 3, 0)  # 3 alarms where the active version raised none
    assert counts[("idx", 3, 2)] == VerdictCount(3, 0, 0)


def test_without_candidates_records_have_no_shadow_and_a_promoted_one_leaves_it():
    scorer, cands, repo, active, _ = setup()
    assert all(r.shadow is None for r in scorer.score(frames(2), active))
    repo.versions[2] = version(2, 10.0, threshold=1.0)
    repo.listed = [2]
    cands.refresh(repo)  # type: ignore[arg-type]
    assert cands.held() == {"idx": [2]}
    repo.listed = []  # promoted: no longer a candidate
    active = {"idx": LoadedIndex(*repo.versions[2])}  # type: ignore[arg-type]
    cands.refresh(repo)  # type: ignore[arg-type]
    assert cands.held() == {}
    records = scorer.score(frames(2), active)
    assert all(r.index_version == 2 and r.is_anomaly and r.shadow is None for r in records)


def test_a_candidate_of_another_backbone_or_with_bad_data_is_refused_once_and_never_scored():
    scorer, cands, repo, active, _ = setup()
    other = EmbedderSpec("resnet18", "random:1", resize=64, crop=64)
    repo.versions[2] = version(2, 10.0, 1.0, spec=other)
    repo.versions[3] = version(3, 10.0, 1.0)
    repo.corrupt.add(3)
    repo.listed = [2, 3]
    cands.refresh(repo)  # type: ignore[arg-type]
    problems = cands.problems()
    assert len(problems) == 2 and "candidate idx@2 refused" in problems[0] and "this worker embeds" in problems[0]
    assert "checksum" in problems[1]
    assert all(r.shadow is None for r in scorer.score(frames(2), active))
    repo.listed = []  # withdrawn (promoted elsewhere): its refusal is no longer news
    cands.refresh(repo)  # type: ignore[arg-type]
    assert cands.problems() == []


def test_a_candidate_that_fails_to_score_never_costs_the_frame_its_score():
    scorer, cands, repo, active, _ = setup()
    repo.versions[2] = version(2, 10.0, threshold=1.0)
    repo.listed = [2]
    cands.refresh(repo)  # type: ignore[arg-type]

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    scorer.shadow = None  # the active verdicts alone, then the shadow step with a candidate that raises
    records = cands.shadow(scorer.score(frames(2), active), np.zeros((2, DIM)), [(0, 0)] * 2, broken)
    assert [(r.frame_id, r.is_anomaly, r.shadow) for r in records] == [("f0", False, None), ("f1", False, None)]


def test_alerts_and_incidents_ignore_an_anomalous_shadow_verdict():
    shadowed = ScoreRecord(frame_id="f1", source="cam", sequence=0, capture_time=0.0, score_time=0.0, score=1.0,
                           threshold=5.0, is_anomaly=False, index_name="idx", index_version=1, backbone="r18",
                           latency_s=0.1, shadow=[{"version": 2, "score": 99.0, "threshold": 1.0, "is_anomaly": True}])  # fmt: skip
    decoded = ScoreRecord.decode(shadowed.encode()[1])
    assert NoiseFilter(NoiseConfig(cooldown_s=0)).decide(decoded).outcome == NORMAL
    assert IncidentTracker(IncidentConfig()).observe(decoded, NORMAL) == []


@pytest.mark.parametrize("shadow", [
    "v2", [{"version": 2}], [{"version": 2, "score": "nan", "threshold": 1.0, "is_anomaly": True}],
    [{"version": 2, "score": 1.0, "threshold": 1.0, "is_anomaly": 1}],
    [{"version": 2, "score": 1.0, "threshold": 1.0, "is_anomaly": True, "html": "<b>"}],
    [{"version": 2, "score": 1.0, "threshold": None, "is_anomaly": False}] * 17,
])  # fmt: skip
def test_a_malformed_shadow_field_is_refused_by_every_reader(shadow):
    body = json.loads(ScoreRecord(frame_id="f", source="c", sequence=0, capture_time=0.0, score_time=0.0,
                                  score=1.0, threshold=5.0, is_anomaly=False, index_name="idx", index_version=1,
                                  backbone="b", latency_s=0.0).encode()[1])  # fmt: skip
    body["shadow"] = shadow
    with pytest.raises(ScoreDecodeError, match="shadow"):
        ScoreRecord.decode(json.dumps(body).encode())


def test_the_tally_keeps_what_a_failed_flush_could_not_write():
    tally = VerdictTally(clock=lambda: 600.0)
    rec = ScoreRecord(frame_id="f", source="c", sequence=0, capture_time=0.0, score_time=0.0, score=9.0,
                      threshold=5.0, is_anomaly=True, index_name="idx", index_version=1, backbone="b", latency_s=0.0)  # fmt: skip
    tally.add([rec, rec])
    taken = tally.take()
    assert taken == {("idx", 1, 10): VerdictCount(2, 2, 2)} and tally.take() == {}
    tally.put_back(taken)
    tally.add([rec])
    assert tally.take() == {("idx", 1, 10): VerdictCount(3, 3, 3)}


def test_index_status_shows_both_rates_and_how_many_workers_shadow_the_candidate():
    states = [{"indexes": {"idx": 1}, "candidates": {"idx": [2]}}, {"indexes": {"idx": 1}, "candidates": {}}]
    serving = serving_workers(states, "idx")
    assert serving == {1: 2, 2: 1}
    table = [
        {"version": 1, "role": "active", "frames": 200, "alarms": 4, "alarm_rate": 0.02, "target_fpr": 0.01,
         "threshold": 5.0, "active_alarm_rate": None, "workers": serving[1]},
        {"version": 2, "role": "candidate", "frames": 100, "alarms": 1, "alarm_rate": 0.01, "target_fpr": 0.01,
         "threshold": 6.5, "active_alarm_rate": 0.03, "workers": serving[2]},
    ]  # fmt: skip
    lines = render("idx", 3600, table).splitlines()
    assert "last 1h" in lines[0]
    assert lines[2].split() == ["1", "active", "200", "4", "2.00%", "1.00%", "5", "-", "2"]
    assert lines[3].split() == ["2", "candidate", "100", "1", "1.00%", "1.00%", "6.5", "3.00%", "1"]
    assert "framewatch index promote idx VERSION" in lines[-1]
