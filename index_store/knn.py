"""The DN2 kNN index over one memory of normal vectors: exact (faiss flat), C k-means centres, or a coreset.

Scoring rules (distances are squared Euclidean, as in DN2), one per memory kind (``memories.py``):
  - exact:   d(y) = mean over the k nearest training embeddings of ||y - x||^2
  - kmeans:  d(y) = sum over the k nearest of the C centres of ||y - c||^2
    (the paper's k-means approximation; with C = N it ranks exactly as exact).
  - coreset: as exact, against C training embeddings chosen by greedy
    farthest-point subsampling (PatchCore's memory compression).
The same index holds global features (one vector per frame) or patch features (one
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

from index_store.memories import MEMORIES, unknown


class Searcher(Protocol):
    """What scoring needs of an index: ``KnnIndex`` (faiss) or ``device_knn.DeviceKnn`` (torch)."""

    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def as_f32(x: np.ndarray) -> np.ndarray:
    """C-contiguous float32 2-D array (what faiss wants)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of embeddings, got shape {x.shape}")
    return x


def scores_from_sqdist(memory: str, sqdist: np.ndarray) -> np.ndarray:
    """(N, k) squared distances to the k nearest, nearest first -> (N,) float32 scores by the memory's rule
    (``Memory.reduce``), each distance clamped at 0 first (float rounding can make it negative)."""
    return MEMORIES[memory].reduce(np.maximum(sqdist, 0.0)).astype(np.float32)


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
    """A fitted index. ``vectors``: what its memory kind holds (``memories.py``): the training embeddings
    (exact), the centres (kmeans) or the kept training embeddings (coreset)."""

    memory: str
    k: int
    vectors: np.ndarray  # (M, D) float32

    def __post_init__(self) -> None:
        if self.memory not in MEMORIES:
            raise ValueError(unknown(self.memory))
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
        return scores_from_sqdist(self.memory, dist), ids

    def score_window(self, embeddings: np.ndarray) -> float:
        """Group anomaly score of a set of frames (see ``group_score``)."""
        return group_score(self, embeddings)


def build(memory: str, train: np.ndarray, size: int = 0, k: int = 2, seed: int = 0) -> KnnIndex:
    """The ``memory`` kind's index over (N, D) ``train``; ``size``: C for a sized memory (centres, kept rows)."""
    if memory not in MEMORIES:
        raise ValueError(unknown(memory))
    return KnnIndex(memory, k, MEMORIES[memory].select(as_f32(train), size, seed))


def build_exact(train: np.ndarray, k: int = 2) -> KnnIndex:
    return build("exact", train, 0, k)


def build_kmeans(train: np.ndarray, clusters: int, k: int = 2, seed: int = 0) -> KnnIndex:
    """Cluster all training embeddings into ``clusters`` centres (faiss k-means)."""
    return build("kmeans", train, clusters, k, seed)


def build_coreset(train: np.ndarray, size: int, k: int = 2, seed: int = 0) -> KnnIndex:
    """Keep ``size`` training vectors chosen by greedy farthest-point (k-center) selection
    (``selection.coreset_rows``: measured on a seeded random projection, as PatchCore does)."""
    return build("coreset", train, size, k, seed)


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
