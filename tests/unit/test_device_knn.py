"""The torch kNN backend gives faiss's scores and neighbours for every index kind (on device "cpu" here;
a CUDA worker runs the same code on its GPU), however its tiles are cut; the selection keeps faiss
where the device is not CUDA or the index does not fit; a worker's loaded index scores through it."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch

from index_store import device_knn, knn
from index_store.anomaly_maps import score_maps
from index_store.device_knn import DeviceKnn, searcher_for
from index_store.memories import NAMES
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec
from worker.indexes import IndexSet
from worker.metrics import WorkerMetrics
from worker.scoring import score_frames, window_score

DIM = 16


def data(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def build(kind: str, k: int, train: np.ndarray) -> knn.KnnIndex:
    if kind == "exact":
        return knn.build_exact(train, k)
    if kind == "kmeans":
        return knn.build_kmeans(train, clusters=40, k=k)
    return knn.build_coreset(train, size=60, k=k)


def assert_same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    assert got[0].shape == want[0].shape and got[1].shape == want[1].shape
    # atol: a query equal to an index row is at distance 0, which both compute as ||x||^2 + ||q||^2 - 2 x.q
    # (~30 here) rounded in float32: a few 1e-6 either side of 0, no relative tolerance covers that.
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("kind", NAMES)
@pytest.mark.parametrize("k", [1, 3])
def test_same_scores_and_neighbours_as_faiss(kind: str, k: int) -> None:
    train = data(300, 0)
    index = build(kind, k, train)
    queries = np.concatenate([data(50, 1), train[:5]])  # a training row: distance ~0 to itself, clamped at 0
    want = index.search(queries)
    got = DeviceKnn(index, "cpu").search(queries)
    assert_same(got, want)
    assert np.all(got[0] >= 0)


@pytest.mark.parametrize("kind", NAMES)
@pytest.mark.parametrize("query_chunk, base_chunk", [(1, 1), (7, 2), (3, 13), (64, 1000)])
def test_tiles_of_any_size_give_the_same_result(kind: str, query_chunk: int, base_chunk: int) -> None:
    index = build(kind, 4, data(300, 2))
    queries = data(40, 3)
    got = DeviceKnn(index, "cpu", query_chunk=query_chunk, base_chunk=base_chunk).search(queries)
    assert_same(got, index.search(queries))


def test_k_larger_than_the_index_is_capped_by_its_size() -> None:
    for kind in NAMES:
        index = knn.KnnIndex(kind, 8, data(5, 4))
        queries = data(9, 5)
        got = DeviceKnn(index, "cpu", base_chunk=2).search(queries)
        assert got[1].shape == (9, 5)
        assert_same(got, index.search(queries))
        none = DeviceKnn(index, "cpu").search(queries[:0])
        assert none[1].shape == (0, 8)  # as faiss's: an empty batch keeps the index's k
        assert_same(none, index.search(queries[:0]))


def test_empty_queries_and_tensor_queries() -> None:
    index = knn.build_kmeans(data(100, 6), clusters=20, k=3)
    searcher = DeviceKnn(index, "cpu")
    empty = searcher.search(np.zeros((0, DIM), np.float32))
    assert_same(empty, index.search(np.zeros((0, DIM), np.float32)))
    assert empty[1].shape == (0, 3)
    queries = data(30, 7)
    assert_same(searcher.search(torch.from_numpy(queries)), index.search(queries))
    with pytest.raises(ValueError, match="dimension"):
        searcher.search(data(2, 8, dim=DIM + 1))


def test_patch_maps_and_window_scores_match_faiss() -> None:
    index = knn.build_coreset(data(400, 9), size=100, k=3)
    grids = data(3 * 5 * 6, 10).reshape(3, 5, 6, DIM)
    searcher = DeviceKnn(index, "cpu", query_chunk=8, base_chunk=16)
    got, want = score_maps(searcher, grids), score_maps(index, grids)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4)
    window = data(4, 11)
    assert knn.group_score(searcher, window) == pytest.approx(index.score_window(window), rel=1e-4)


# -- selection -----------------------------------------------------------------------------
def test_a_cpu_worker_keeps_faiss() -> None:
    index = knn.build_exact(data(50, 12))
    assert searcher_for(index, "cpu") is index
    assert searcher_for(index, torch.device("cpu"), free_bytes=lambda d: 1 << 40) is index


def test_a_cuda_worker_uses_the_device_only_when_the_index_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule at its boundary: device_bytes(index) <= fraction * free memory (no GPU needed: the
    device backend is replaced by a marker)."""
    monkeypatch.setattr(device_knn, "DeviceKnn", lambda index, device: ("on", str(device)))
    index = knn.build_exact(data(1000, 13))
    need = device_knn.device_bytes(index)
    assert need >= 4 * 1000 * (DIM + 1)
    assert searcher_for(index, "cuda", fraction=0.5, free_bytes=lambda d: 2 * need) == ("on", "cuda")
    assert searcher_for(index, "cuda", fraction=0.5, free_bytes=lambda d: 2 * need - 2) is index
    assert searcher_for(index, "cuda:1", fraction=1.0, free_bytes=lambda d: need) == ("on", "cuda:1")


def test_a_device_that_fails_keeps_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    index = knn.build_exact(data(50, 14))

    def no_driver(device: torch.device) -> int:
        raise RuntimeError("Found no NVIDIA driver on your system")

    def out_of_memory(index: knn.KnnIndex, device: torch.device) -> DeviceKnn:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert searcher_for(index, "cuda", free_bytes=no_driver) is index
    monkeypatch.setattr(device_knn, "DeviceKnn", out_of_memory)
    assert searcher_for(index, "cuda", free_bytes=lambda d: 1 << 40) is index


# -- the worker ---------------------------------------------------------------------------
class OneIndexRepo:
    """What IndexSet reads of Redis, for one version of one index."""

    def __init__(self, meta: IndexMeta, index: knn.KnnIndex) -> None:
        self.held, self.index = meta, index

    def active_version(self, name: str) -> Optional[int]:
        return self.held.version

    def meta(self, name: str, version: int) -> IndexMeta:
        return self.held

    def load(self, name: str, version: int) -> tuple[IndexMeta, knn.KnnIndex]:
        return self.held, self.index

    def load_adapted(self, meta: IndexMeta) -> None:
        return None

    def load_quantized(self, meta: IndexMeta) -> None:
        return None

    def eviction_risk(self) -> None:
        return None

    def missing_keys(self, meta: IndexMeta) -> list[str]:
        return []


class Counting(DeviceKnn):
    searches = 0

    def search(self, embeddings):  # type: ignore[no-untyped-def]
        Counting.searches += 1
        return super().search(embeddings)


def test_a_loaded_version_is_scored_through_the_searcher_built_with_it() -> None:
    from prometheus_client import CollectorRegistry

    spec = EmbedderSpec()
    index = knn.build_exact(data(200, 15, dim=spec.dim), k=2)
    origins = [f"f{i}" for i in range(200)]
    meta = IndexMeta("idx", "exact", 2, spec.dim, 200, spec.to_dict(), version=1, origins=origins)
    built: list[knn.KnnIndex] = []

    def searcher(loaded: knn.KnnIndex) -> DeviceKnn:
        built.append(loaded)
        return Counting(loaded, "cpu", base_chunk=64)

    indexes = IndexSet(lambda: None, ["idx"], WorkerMetrics(CollectorRegistry()), searcher_for=searcher)  # type: ignore[arg-type,return-value]
    indexes.refresh(OneIndexRepo(meta, index))  # type: ignore[arg-type]
    assert built == [index]
    loaded = indexes.snapshot()["idx"]
    feats = data(6, 16, dim=spec.dim)
    whys = score_frames(loaded, feats, [(64, 64)] * 6)
    assert Counting.searches == 1
    np.testing.assert_allclose([w.score for w in whys], index.score(feats), rtol=1e-4)
    assert [w.neighbors for w in whys] == [[f"f{j}" for j in row] for row in index.search(feats)[1]]
    assert window_score(loaded, feats) == pytest.approx(index.score_window(feats), rel=1e-4)
    assert Counting.searches == 2
