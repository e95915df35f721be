"""One index per camera (``--route 'PATTERN={source}'``): template routing, the fallback and what the record
says of it, LRU eviction and reload under the memory budget, new versions followed from events.

The repository is an in-memory stand-in (the loader's Redis side is covered by the integration test,
tests/integration/test_camera_indexes.py); records come out of the Scorer, as the worker publishes them.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from index_store.knn import build_exact
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec
from wire.records import FrameRecord, ScoreRecord
from worker.camera_indexes import CameraIndexes
from worker.delivery import PER_CAMERA_LABEL, scored_label
from worker.extract import NullExtractor
from worker.index_cache import LruBudget, held_bytes
from worker.indexes import LoadedIndex
from worker.inflight import InFlight
from worker.metrics import CameraIndexMetrics
from worker.routing import Route, RouteError, Routing
from worker.scoring import Scorer

DIM = 512  # resnet18's, so the default-looking spec is consistent
SPEC = EmbedderSpec(backbone="resnet18")
N_VECTORS = 16
INDEX_BYTES = 2 * N_VECTORS * DIM * 4  # vectors and faiss's copy


def make_index(name: str, version: int = 1, spec: EmbedderSpec = SPEC, seed: int = 0) -> tuple[IndexMeta, object]:
    vectors = np.random.default_rng(seed).normal(size=(N_VECTORS, spec.dim)).astype(np.float32)
    meta = IndexMeta(name=name, kind="exact", k=2, dim=spec.dim, n_vectors=N_VECTORS, spec=spec.to_dict(),
                     version=version, threshold=1e9)  # fmt: skip
    return meta, build_exact(vectors)


class FakeRepo:
    """The repository calls the loader makes, in memory; counts loads per name."""

    def __init__(self) -> None:
        self.active: dict[str, int] = {}
        self.stored: dict[tuple[str, int], tuple[IndexMeta, object]] = {}
        self.loads: dict[str, int] = {}

    def publish(self, name: str, spec: EmbedderSpec = SPEC) -> int:
        version = self.active.get(name, 0) + 1
        self.stored[(name, version)] = make_index(name, version, spec, seed=version)
        self.active[name] = version
        return version

    def active_version(self, name: str):  # type: ignore[no-untyped-def]
        return self.active.get(name)

    def active_versions(self, names):  # type: ignore[no-untyped-def]
        return {n: self.active.get(n) for n in names}

    def load(self, name: str, version: int):  # type: ignore[no-untyped-def]
        self.loads[name] = self.loads.get(name, 0) + 1
        return self.stored[(name, version)]

    def load_adapted(self, meta: IndexMeta) -> None:
        return None


@pytest.fixture
def repo() -> FakeRepo:
    return FakeRepo()


@pytest.fixture
def cameras(repo: FakeRepo):  # type: ignore[no-untyped-def]
    cams = CameraIndexes(lambda: repo, lambda: SPEC, budget_bytes=2 * INDEX_BYTES,  # type: ignore[arg-type,return-value]
                         metrics=CameraIndexMetrics(CollectorRegistry()), wait_s=10.0)  # fmt: skip
    cams.start()
    yield cams
    cams.stop()


def fallback() -> LoadedIndex:
    meta, index = make_index("yard")
    return LoadedIndex(meta, index)  # type: ignore[arg-type]


def score(cameras: CameraIndexes, sources: list[str], routes: tuple[str, ...] = ("cam-*={source}",)) -> list[ScoreRecord]:
    scorer = Scorer(NullExtractor(DIM), Routing.parse("yard", routes), cameras=cameras)
    frames = [InFlight.decoded(FrameRecord(f"f{i}", s, i, time.time(), b"", "image/png"), None, offset=i)
              for i, s in enumerate(sources)]  # fmt: skip
    return scorer.score(frames, {"yard": fallback()})


def wait_until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


# -- routing -----------------------------------------------------------------------------------
def test_a_template_route_names_the_index_after_the_camera_and_fixed_routes_still_win_in_order():
    routing = Routing.parse("yard", ["cam-gate=gate", "cam-*={source}", "dock-*=site1-{source}"])
    assert routing.route("cam-gate") == Route("gate")
    assert routing.route("cam-7") == Route("cam-7", per_camera=True)
    assert routing.route("dock-2") == Route("site1-dock-2", per_camera=True)
    assert routing.route("lobby") == Route("yard")
    assert routing.names() == ["gate", "yard"]  # loaded at start; per-camera ones are not
    assert routing.per_camera and not Routing.parse("yard", ["cam-*=cams"]).per_camera


@pytest.mark.parametrize("rule", ["cam-*={camera}", "cam-*={source", "cam-*={}"])
def test_a_template_with_another_placeholder_is_refused(rule):
    with pytest.raises(RouteError, match="placeholder|source"):
        Routing.parse("yard", [rule])


# -- the LRU budget ----------------------------------------------------------------------------
def test_the_budget_evicts_the_least_recently_used_and_holds_an_oversized_one_alone():
    lru: LruBudget[str, str] = LruBudget(100)
    lru.put("a", "A", 40)
    lru.put("b", "B", 40)
    assert lru.get("a") == "A"  # a is now the most recently used
    assert lru.put("c", "C", 40) == ["b"]
    assert lru.keys() == ["a", "c"] and lru.bytes == 80
    assert lru.put("huge", "H", 500) == ["a", "c"]
    assert lru.keys() == ["huge"]  # held, alone, until the next one comes
    assert lru.put("a", "A", 40) == ["huge"]


def test_held_bytes_counts_the_vectors_and_the_search_copy():
    _, index = make_index("x")
    assert held_bytes(index) == INDEX_BYTES


# -- per-camera indexes, through the records the scorer makes ----------------------------------------
def test_a_camera_with_its_own_index_is_scored_by_it_and_one_without_by_the_fallback(repo, cameras):
    repo.publish("cam-a")
    own, other, fixed = score(cameras, ["cam-a", "cam-b", "lobby"])
    assert (own.index_name, own.index_version, own.camera_index, own.index_fallback) == ("cam-a", 1, "cam-a", "")
    assert (other.index_name, other.camera_index, other.index_fallback) == ("yard", "cam-b", "missing")
    assert (fixed.index_name, fixed.camera_index, fixed.index_fallback) == ("yard", None, "")
    assert ScoreRecord.decode(other.encode()[1]) == other  # the fields are in the contract
    assert [scored_label(r) for r in (own, other, fixed)] == [PER_CAMERA_LABEL, "yard", "yard"]
    score(cameras, ["cam-b"] * 3)
    assert repo.loads == {"cam-a": 1}  # a camera without an index is not looked up again per frame


def test_a_camera_named_like_the_fallback_is_scored_by_the_index_held_without_loading_it_again(repo, cameras):
    repo.publish("yard")
    (rec,) = score(cameras, ["yard"], routes=("*={source}",))
    assert (rec.index_name, rec.camera_index, rec.index_fallback) == ("yard", "yard", "")
    assert repo.loads == {}


def test_an_index_of_another_backbone_is_refused_and_its_camera_goes_to_the_fallback(repo, cameras):
    repo.publish("cam-x", spec=EmbedderSpec(backbone="resnet50"))
    (rec,) = score(cameras, ["cam-x"])
    assert (rec.index_name, rec.camera_index, rec.index_fallback) == ("yard", "cam-x", "refused")
    (problem,) = cameras.problems()
    assert "cam-x@1" in problem and "resnet50" in problem and "fallback" in problem


def test_beyond_the_budget_the_least_recently_used_is_evicted_and_loaded_again_on_its_next_frame(repo, cameras):
    for name in ("cam-a", "cam-b", "cam-c"):
        repo.publish(name)
    for source in ("cam-a", "cam-b", "cam-c"):  # the budget holds two
        (rec,) = score(cameras, [source])
        assert rec.index_name == source
    assert sorted(cameras.cache.keys()) == ["cam-b", "cam-c"] and cameras.cache.bytes <= 2 * INDEX_BYTES
    (rec,) = score(cameras, ["cam-a"])
    assert (rec.index_name, rec.index_fallback) == ("cam-a", "")
    assert repo.loads == {"cam-a": 2, "cam-b": 1, "cam-c": 1}
    assert cameras.cache.evictions == 2


def test_a_new_version_takes_effect_on_its_event_and_an_unseen_camera_is_not_loaded(repo, cameras):
    repo.publish("cam-a")
    assert score(cameras, ["cam-a"])[0].index_version == 1
    repo.publish("cam-a")
    repo.publish("cam-never")
    cameras.changed("cam-a")
    cameras.changed("cam-never")
    assert wait_until(lambda: score(cameras, ["cam-a"])[0].index_version == 2)
    assert "cam-never" not in repo.loads


def test_a_camera_whose_index_appears_later_gets_it_on_the_event_or_after_a_resubscription(repo, cameras):
    assert score(cameras, ["cam-a", "cam-b"])[0].index_fallback == "missing"
    repo.publish("cam-a")
    cameras.changed("cam-a")
    assert wait_until(lambda: score(cameras, ["cam-a"])[0].index_fallback == "")
    repo.publish("cam-b")  # its event was missed (the watcher was away): the resubscription catches up
    cameras.resync()
    assert wait_until(lambda: score(cameras, ["cam-b"])[0].index_name == "cam-b")


def test_a_frame_whose_index_is_still_loading_after_the_wait_goes_to_the_fallback(repo):
    repo.publish("cam-a")
    cams = CameraIndexes(lambda: repo, lambda: SPEC, 2 * INDEX_BYTES, CameraIndexMetrics(CollectorRegistry()),  # type: ignore[arg-type,return-value]
                         wait_s=0.0)  # the loader is not started: nothing loads  # fmt: skip
    (rec,) = score(cams, ["cam-a"])
    assert (rec.index_name, rec.camera_index, rec.index_fallback) == ("yard", "cam-a", "loading")


def test_the_flag_parses_memory_sizes():
    from framewatch.flags import byte_size

    assert byte_size("512MiB") == 512 << 20 and byte_size("2G") == 2 << 30 and byte_size("1.5GB") == 1_500_000_000
    assert byte_size("4096") == 4096
    for bad in ("lots", "0", "-1MiB", "12XB"):
        with pytest.raises(argparse.ArgumentTypeError):
            byte_size(bad)

