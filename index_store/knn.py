"""The DN2 kNN index: exact (faiss flat), against C k-means centres, or against a coreset.

Scoring rules (distances are squared Euclidean, as in DN2):
  - exact:   d(y) = mean over the k nearest training embeddings of ||y - x||^2
  - kmeans:  d(y) = sum over the k nearest of the C centres of ||y - c||^2
    (the paper's k-means approximation; with C = N it ranks exactly as exact).
  - coreset: as exact, against C training embeddings chosen by greedy
    farthest-point subsampling (PatchCore's memory compression).
The same index holds global embeddings (one per frame) or patch features (one
per grid location; ``anomaly_maps.py`` turns their scores into maps).
``KnnIndex`` searches with faiss on the CPU; ``device_knn.py`` searches the same
vectors on a torch device. Both are ``Searcher``s and both turn distances into
scores with ``scores_from_sqdist``, so they score alike.
Arrays in, arrays out: no Redis, no Kafka here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import faiss
import numpy as np

KINDS = ("exact", "kmeans", "coreset")


class Searcher(Protocol):
    """What scoring needs of an index: ``KnnIndex`` (faiss) or ``device_knn.DeviceKnn`` (torch)."""

    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 2-D array (what faiss wants)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {x.shape}")
    return x


def scores_from_sqdist(kind: str, sqdist: np.ndarray) -> np.ndarray:
    """(N, k) squared distances to the k nearest, nearest first -> (N,) float32 scores by the kind's rule:
    each distance clamped at 0 (float rounding can make it negative), then summed (kmeans) or averaged."""
    sqdist = np.maximum(sqdist, 0.0)
    return (sqdist.sum(axis=1) if kind == "kmeans" else sqdist.mean(axis=1)).astype(np.float32)


def group_score(searcher: Searcher, embeddings: np.ndarray) -> float:
    """Group anomaly score: the mean-pooled embedding of a set of frames, scored by the index's rule."""
    pooled = as_f32(embeddings).mean(axis=0, keepdims=True)
    return float(searcher.search(pooled)[0][0])


def knn_sqdist(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(N, k) squared L2 distances from each query to its k nearest rows of ``base``, ascending."""
    base, queries = as_f32(base), as_f32(queries)
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(base)
    dist, _ = index.search(queries, min(k, base.shape[0]))
    return np.maximum(dist, 0.0)


def knn_ids(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(N,) row of ``base`` nearest each query."""
    index = faiss.IndexFlatL2(base.shape[1])
    index.add(as_f32(base))
    return index.search(as_f32(queries), 1)[1][:, 0]


@dataclass(frozen=True)
class KnnIndex:
    """A fitted index. ``vectors`` are the training embeddings (exact) or the centres (kmeans)."""

    kind: str
    k: int
    vectors: np.ndarray  # (M, D) float32

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, not {self.kind!r}")
        if self.k < 1:
            raise ValueError("k must be at least 1")
        object.__setattr__(self, "vectors", as_f32(self.vectors))
        object.__setattr__(self, "_faiss", None)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def size(self) -> int:
        return int(self.vectors.shape[0])

    def _index(self) -> faiss.IndexFlatL2:
        idx = self.__dict__["_faiss"]
        if idx is None:
            idx = faiss.IndexFlatL2(self.dim)
            idx.add(self.vectors)
            object.__setattr__(self, "_faiss", idx)
        return idx

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N,) anomaly scores (higher = more anomalous)."""
        return self.search(embeddings)[0]

    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) embeddings -> (N,) scores and (N, k) row numbers of the nearest vectors (nearest first)."""
        q = as_f32(embeddings)
        if q.shape[1] != self.dim:
            raise ValueError(f"embedding dimension {q.shape[1]} != index dimension {self.dim}")
        if q.shape[0] == 0:
            return np.zeros(0, dtype=np.float32), np.zeros((0, self.k), dtype=np.int64)
        dist, ids = self._index().search(q, min(self.k, self.size))
        return scores_from_sqdist(self.kind, dist), ids

    def score_window(self, embeddings: np.ndarray) -> float:
        """Group anomaly score of a set of frames (see ``group_score``)."""
        return group_score(self, embeddings)


def build_exact(train: np.ndarray, k: int = 2) -> KnnIndex:
    return KnnIndex("exact", k, as_f32(train))


def build_kmeans(train: np.ndarray, clusters: int, k: int = 2, seed: int = 0, niter: int = 25) -> KnnIndex:
    """Cluster all training embeddings into ``clusters`` centres (faiss k-means)."""
    train = as_f32(train)
    if clusters >= train.shape[0]:
        return KnnIndex("kmeans", k, train.copy())
    km = faiss.Kmeans(
        train.shape[1], clusters, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1
    )
    km.train(train)
    return KnnIndex("kmeans", k, km.centroids)


def build_coreset(train: np.ndarray, size: int, k: int = 2, seed: int = 0, sketch_dim: int = 128) -> KnnIndex:
    """Keep ``size`` training vectors chosen by greedy farthest-point (k-center) selection.

    Distances for the selection are measured after a seeded random projection to
    ``sketch_dim`` dims (as PatchCore does, for speed); the kept vectors are the
    original ones.
    """
    train = as_f32(train)
    return KnnIndex("coreset", k, train[coreset_rows(train, size, seed, sketch_dim)])


def coreset_rows(train: np.ndarray, size: int, seed: int = 0, sketch_dim: int = 128) -> np.ndarray:
    """Sorted row numbers of a greedy k-center coreset of ``size`` rows."""
    n, d = train.shape
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    sketch = train
    if d > sketch_dim:
        sketch = train @ (rng.standard_normal((d, sketch_dim)).astype(np.float32) / np.sqrt(sketch_dim))
    sq = np.einsum("ij,ij->i", sketch, sketch)
    chosen = [int(rng.integers(n))]
    nearest = np.full(n, np.inf, dtype=np.float32)
    for _ in range(size - 1):
        c = chosen[-1]
        np.minimum(nearest, sq - 2.0 * (sketch @ sketch[c]) + sq[c], out=nearest)
        chosen.append(int(np.argmax(nearest)))
    return np.sort(np.asarray(chosen))


def leave_one_out_scores(train: np.ndarray, k: int = 2) -> np.ndarray:
    """DN2 score of each training embedding against all the others: (N,)."""
    train = as_f32(train)
    if train.shape[0] < 2:
        return np.zeros(train.shape[0], dtype=np.float32)
    dist = knn_sqdist(train, train, k + 1)[:, 1:]  # drop the point itself
    return dist.mean(axis=1).astype(np.float32)


def clean(train: np.ndarray, fraction: float, k: int = 2) -> np.ndarray:
    """Unsupervised cleaning: indices of the embeddings kept after dropping ``fraction``
    of them with the largest leave-one-out kNN distance (paper: 0.5)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError("clean fraction must be in [0, 1)")
    n = train.shape[0]
    keep = n - int(round(n * fraction))
    if keep >= n:
        return np.arange(n)
    order = np.argsort(leave_one_out_scores(train, k), kind="stable")
    return np.sort(order[:keep])
