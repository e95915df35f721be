"""How a compressed memory chooses what to keep of its training vectors: greedy k-center (coreset) rows
and k-means centres, over one set of vectors or over every grid cell at once.

Arrays in, arrays out (numpy and faiss only); ``memories.py`` says which memory kind uses which.
"""

from __future__ import annotations

from typing import Optional

import faiss
import numpy as np


def coreset_rows(train: np.ndarray, size: int, seed: int = 0, sketch_dim: int = 128) -> np.ndarray:
    """Sorted row numbers of a greedy k-center coreset of ``size`` rows.

    Distances for the selection are measured after a seeded random projection to
    ``sketch_dim`` dims (as PatchCore does, for speed); the rows name the original vectors.
    """
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


def kmeans_centres(train: np.ndarray, clusters: int, seed: int = 0, niter: int = 25) -> np.ndarray:
    """(clusters, D) faiss k-means centres of (N, D) float32 ``train``; a copy of ``train`` when N <= clusters."""
    if clusters >= train.shape[0]:
        return train.copy()
    km = faiss.Kmeans(
        train.shape[1], clusters, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1
    )
    km.train(train)
    return km.centroids


def nearest_training_rows(train: np.ndarray, held: np.ndarray) -> np.ndarray:
    """(P, T, D) training vectors per cell, (P, M, D) held ones -> (P, M): the training row nearest each."""
    sq = np.einsum("ptd,ptd->pt", train, train)
    d = sq[:, None, :] - 2.0 * np.einsum("pmd,ptd->pmt", held, train)
    return np.argmin(d, axis=-1)


def coreset_rows_per_cell(x: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """(P, T, D) -> (P, size) sorted rows of a greedy k-center coreset in each of the P cells,
    all cells at once (the start row of each cell is drawn from ``default_rng(seed)``)."""
    p, t, _ = x.shape
    rng = np.random.default_rng(seed)
    sq = np.einsum("ptd,ptd->pt", x, x)
    cells = np.arange(p)
    chosen = np.empty((p, size), np.int64)
    chosen[:, 0] = rng.integers(t, size=p)
    nearest = np.full((p, t), np.inf, np.float32)
    for i in range(1, size):
        c = chosen[:, i - 1]
        last = x[cells, c]  # (P, D)
        dist = sq - 2.0 * np.einsum("ptd,pd->pt", x, last) + sq[cells, c][:, None]
        np.minimum(nearest, dist, out=nearest)
        nearest[cells, c] = -np.inf  # never pick a row twice (ties at 0 with duplicates)
        chosen[:, i] = np.argmax(nearest, axis=1)
    return np.sort(chosen, axis=1)


def kmeans_per_cell(x: np.ndarray, clusters: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """(P, T, D) -> (P, clusters, D): Lloyd's k-means in each cell, all cells at once, started from
    the per-cell coreset (deterministic); an emptied cluster keeps its previous centre."""
    cells = np.arange(x.shape[0])[:, None]
    centres = x[cells, coreset_rows_per_cell(x, clusters, seed)]  # (P, C, D)
    assign: Optional[np.ndarray] = None
    for _ in range(niter):
        cn = np.einsum("pcd,pcd->pc", centres, centres)
        new = np.argmin(cn[:, None, :] - 2.0 * np.matmul(x, centres.transpose(0, 2, 1)), axis=2)  # (P, T)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        onehot = (assign[:, :, None] == np.arange(clusters)).astype(np.float32)  # (P, T, C)
        counts = onehot.sum(axis=1)  # (P, C)
        sums = np.matmul(onehot.transpose(0, 2, 1), x)  # (P, C, D)
        filled = counts > 0
        centres = np.where(filled[:, :, None], sums / np.maximum(counts, 1)[:, :, None], centres)
    return np.ascontiguousarray(centres, dtype=np.float32)
