"""Position-aware patch memory for fixed cameras: each location is compared only with normal
patches seen within ``radius`` grid cells of it.

Why: a location-free patch memory (``knn.py``) asks "has this patch been seen
anywhere?", so an ordinary object where it never stands (a crate in the
doorway, a car in the fire lane) scores as normal. A fixed camera sees the
same scene at the same place in every frame, so each location can be judged
against what that part of the scene has looked like. A window of
(2R+1) x (2R+1) cells (Chebyshev distance R, clipped at the grid's edges)
tolerates camera shake of up to R cells.

The memory is kept per cell. Every frame of an index is resized to the same
input shape, so training gives T vectors at each of the h x w cells:

  - exact:   the T training vectors of each cell;
  - kmeans:  ``per_cell`` centres per cell, k-means over that cell's T vectors;
  - coreset: ``per_cell`` of that cell's T vectors, greedy farthest-point.

Compressing per cell (rather than globally with position tags) keeps the
rule exact: a query only ever meets (summaries of) patches that stood inside
its window, and no centre can carry a doorway patch's position onto a crate.
It also costs the same per cell everywhere, so search is one batched matrix
product per offset group: O(h w (2R+1)^2 M D) per frame for M vectors per cell.

Scoring is ``knn.py``'s rule on the k nearest of the window's candidates
(``scores_from_sqdist``: mean of squared L2 for exact/coreset, sum for kmeans).
k is capped at the smallest window's candidate count (a corner cell's), so
every cell is scored with the same k. A radius that covers the whole grid is
the location-free memory, searched with one faiss flat index.

Cost (``benchmarks/bench_positional.py``; 28x48 cells, T=200, D=256, R=1, 2 busy
cores): exact holds 276 MB and searches in ~50 ms a frame; k-means or coreset with
16 per cell, 22 MB and ~10 ms; today's location-free 1000 centres, ~30 ms. The
memory is held once, in the search layout; search runs numpy's BLAS on one
thread (``one_blas_thread``).

Storage: ``to_arrays`` gives the (h*w*M, D) float32 vectors in row-major cell
order (cell (r, c) holds rows (r*w + c)*M .. +M) and a JSON-able dict; the
repository stores them as raw little-endian bytes + JSON. Arrays in, arrays
out: no Redis, no torch here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ContextManager, Optional

import faiss
import numpy as np

from index_store.errors import IndexStoreError
from index_store.knn import scores_from_sqdist
from index_store.memories import MEMORIES, unknown

FORMAT = "positional/1"
WORK_BYTES = 256 << 20  # scratch per search step (queries gathered for a window, and their distances)
_BLAS: list[Any] = []  # the threadpoolctl controller, made on first use


def one_blas_thread() -> ContextManager[Any]:
    """Run numpy's BLAS on one thread for a while. Search and build are thousands of small matrix
    products (one per cell); a multi-threaded BLAS synchronises its threads for each, and on a host
    whose cores are busy (the embed stage runs beside the score stage) that made a batch 6x slower
    here. Process-wide while it lasts; a no-op where threadpoolctl is missing."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a declared dependency
        return contextlib.nullcontext()
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


class PositionalError(IndexStoreError, ValueError):
    """Bad settings for a positional memory, or features whose shape does not fit it."""


@dataclass(frozen=True, eq=False)
class PositionalMemory:
    """Per-cell memory of normal patches. ``vectors``: (h, w, M, D) float32 given; held as a view of
    the search layout (one copy: per cell, the D x M vectors over their M squared norms)."""

    memory: str  # memories.py; stored as the layout's "kind"
    k: int
    radius: int
    vectors: np.ndarray = field(repr=False)
    # (h, w, M) int32: the training frame (its index in fit order) each held vector came from; for a
    # k-means centre the training frame nearest it at that cell; -1 for none (vectors added by feedback).
    # None: the exact memory's own order (cell row i = training frame i). Names nearest normal frames.
    rows: Optional[np.ndarray] = field(default=None, repr=False, compare=False)
    _ranker: np.ndarray = field(init=False, repr=False)  # (cells, D+1, M)
    _flat: Optional[faiss.IndexFlatL2] = field(init=False, repr=False, default=None)  # location-free search

    def __post_init__(self) -> None:
        if self.memory not in MEMORIES:
            raise PositionalError(unknown(self.memory))
        if self.k < 1:
            raise PositionalError(f"k must be at least 1 (got {self.k})")
        if self.radius < 0:
            raise PositionalError(f"position radius must be 0 or more grid cells (got {self.radius})")
        v = np.asarray(self.vectors, dtype=np.float32)
        if v.ndim != 4 or 0 in v.shape:
            raise PositionalError(f"vectors must be a non-empty (h, w, M, D) array, got shape {v.shape}")
        h, w, m, d = v.shape
        cells = v.reshape(h * w, m, d)
        ranker = np.empty((h * w, d + 1, m), np.float32)
        ranker[:, :d] = cells.transpose(0, 2, 1)
        ranker[:, d] = np.einsum("pmd,pmd->pm", cells, cells)
        object.__setattr__(self, "_ranker", ranker)
        object.__setattr__(self, "vectors", ranker[:, :d].transpose(0, 2, 1).reshape(h, w, m, d))
        if self.rows is not None:
            rows = np.asarray(self.rows)
            if rows.shape != (h, w, m) or not np.issubdtype(rows.dtype, np.integer) or (rows.size and rows.min() < -1):
                raise PositionalError(f"rows must be (h, w, M) = {(h, w, m)} frame indices or -1, got {rows.shape}")
            object.__setattr__(self, "rows", rows.astype(np.int32))

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.vectors.shape[0]), int(self.vectors.shape[1])

    @property
    def per_cell(self) -> int:
        """M: vectors held per cell (T for exact)."""
        return int(self.vectors.shape[2])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[3])

    @property
    def nbytes(self) -> int:
        return int(self._ranker.nbytes)

    @property
    def reach(self) -> tuple[int, int]:
        """The radius clipped to the grid, per axis (rows, columns): larger adds no cell."""
        h, w = self.grid
        return min(self.radius, h - 1), min(self.radius, w - 1)

    @property
    def location_free(self) -> bool:
        """True when every window is the whole grid."""
        h, w = self.grid
        return self.radius >= max(h, w) - 1

    @property
    def k_used(self) -> int:
        """k capped at the candidate count of the smallest (corner) window."""
        rr, rc = self.reach
        return min(self.k, (rr + 1) * (rc + 1) * self.per_cell)

    # ------------------------------------------------------------------ search

    def search_grid(self, maps: np.ndarray) -> np.ndarray:
        """(n, h, w, D) patch features -> (n, h, w) float32 scores, each against its own window."""
        q = self._check(maps)
        n, h, w, _ = q.shape
        if n == 0:
            return np.zeros((0, h, w), np.float32)
        if self.location_free:
            return self._search_flat(q)
        with one_blas_thread():
            return self._search_windows(q)

    def _search_windows(self, q: np.ndarray) -> np.ndarray:
        n, h, w, _ = q.shape
        kk = self.k_used
        offsets = self._offsets()
        frames, group = self._step_sizes(len(offsets))
        best = np.empty((n, h, w, kk), np.float32)
        for f0 in range(0, n, frames):
            chunk = q[f0 : f0 + frames]
            top = np.full((len(chunk), h, w, kk), np.inf, np.float32)
            for o0 in range(0, len(offsets), group):
                cand = self._window_sqdist(chunk, offsets[o0 : o0 + group], kk)
                top = _k_smallest(np.concatenate([top, cand], axis=-1), kk)
            best[f0 : f0 + frames] = top
        return scores_from_sqdist(self.memory, best.reshape(-1, kk)).reshape(n, h, w)

    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``knn.Searcher`` form: (n*h*w, D) rows, whole grids in row-major order -> (N,) scores and
        (N, k) ids, all -1 (a positional memory names no nearest frame). Lets ``anomaly_maps.score_maps``
        take this memory in place of a ``KnnIndex``."""
        rows = np.asarray(embeddings)
        h, w = self.grid
        if rows.ndim != 2 or rows.shape[0] % (h * w):
            raise PositionalError(
                f"expected whole {h}x{w} grids as (n*{h * w}, {self.dim}) rows, got shape {rows.shape}"
            )
        scores = self.search_grid(rows.reshape(-1, h, w, rows.shape[1])).reshape(-1)
        return scores, np.full((scores.shape[0], self.k_used), -1, np.int64)

    def nearest_frames(self, vector: np.ndarray, cell: tuple[int, int], k: int) -> list[int]:
        """The training frames (indices in fit order) whose vectors held at ``cell`` are nearest ``vector``,
        nearest first, at most ``k``, each once (global regions and tiles: the frames whose region there
        looked most like this one). Vectors of no known frame (added by feedback) are passed over."""
        held = self.vectors[cell[0], cell[1]]
        d = np.einsum("md,md->m", held - vector, held - vector)
        order = np.argsort(d, kind="stable")
        frames = order if self.rows is None else self.rows[cell[0], cell[1]][order]
        out: list[int] = []
        for f in frames.tolist():
            if f >= 0 and f not in out:
                out.append(int(f))
                if len(out) == k:
                    break
        return out

    def _check(self, maps: np.ndarray) -> np.ndarray:
        q = np.asarray(maps)
        h, w = self.grid
        if q.ndim != 4 or q.shape[1:] != (h, w, self.dim):
            raise PositionalError(
                f"patch features of shape {q.shape} do not fit this positional memory: expected "
                f"(n, {h}, {w}, {self.dim}) (the grid it was fit on; a frame of another size or aspect "
                f"must be resized to the index's input shape first)"
            )
        return np.ascontiguousarray(q, dtype=np.float32)

    def _offsets(self) -> list[tuple[int, int]]:
        rr, rc = self.reach
        return [(dr, dc) for dr in range(-rr, rr + 1) for dc in range(-rc, rc + 1)]

    def _step_sizes(self, n_offsets: int) -> tuple[int, int]:
        """(frames per step, offsets per step) keeping one step's scratch under WORK_BYTES."""
        h, w = self.grid
        unit = h * w * (self.dim + 1 + self.per_cell) * 4  # one frame, one offset
        units = max(1, WORK_BYTES // unit)
        if units >= n_offsets:
            return max(1, units // n_offsets), n_offsets
        return 1, units

    def _window_sqdist(self, q: np.ndarray, offsets: list[tuple[int, int]], kk: int) -> np.ndarray:
        """(n, h, w, len(offsets)*kk): for each query cell and offset (dr, dc), the kk smallest squared
        distances to the memory of cell (r+dr, c+dc), inf where that cell is off the grid.

        Computed memory-cell first: memory cell p meets the query at p - offset for every offset, so
        each memory vector is read once per step, in one batched product (cells, offsets*n, D+1) @
        (D+1, M) of [-2 q, 1] and [m, ||m||^2]: ||m||^2 - 2 q.m, which ranks as the distance does."""
        n, h, w, d = q.shape
        rr, rc = self.reach
        qpad = np.zeros((n, h + 2 * rr, w + 2 * rc, d), np.float32)
        qpad[:, rr : rr + h, rc : rc + w] = -2.0 * q
        gathered = np.empty((h, w, len(offsets), n, d + 1), np.float32)
        gathered[..., d] = 1.0
        for i, (dr, dc) in enumerate(offsets):
            gathered[:, :, i, :, :d] = qpad[:, rr - dr : rr - dr + h, rc - dc : rc - dc + w].transpose(
                1, 2, 0, 3
            )
        gathered = gathered.reshape(h * w, len(offsets) * n, d + 1)
        m = min(kk, self.per_cell)
        near = _k_smallest(np.matmul(gathered, self._ranker), m)  # (cells, O*n, m)
        near += 0.25 * np.einsum("pqd,pqd->pq", gathered[..., :d], gathered[..., :d])[:, :, None]
        near = near.reshape(h, w, len(offsets), n, m).transpose(2, 3, 0, 1, 4)
        out = np.full((len(offsets), n, h, w, kk), np.inf, np.float32)
        for i, (dr, dc) in enumerate(offsets):  # memory cell (r+dr, c+dc) -> query cell (r, c)
            r0, r1 = max(0, -dr), min(h, h - dr)
            c0, c1 = max(0, -dc), min(w, w - dc)
            out[i, :, r0:r1, c0:c1, :m] = near[i, :, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
        return out.transpose(1, 2, 3, 0, 4).reshape(n, h, w, len(offsets) * kk)

    def _search_flat(self, q: np.ndarray) -> np.ndarray:
        idx = self._flat
        if idx is None:
            idx = faiss.IndexFlatL2(self.dim)
            idx.add(np.ascontiguousarray(self.vectors).reshape(-1, self.dim))
            object.__setattr__(self, "_flat", idx)
        n, h, w, d = q.shape
        dist, _ = idx.search(q.reshape(-1, d), self.k_used)
        return scores_from_sqdist(self.memory, dist).reshape(n, h, w)

    # ------------------------------------------------------------------ storage

    def to_arrays(self) -> tuple[np.ndarray, dict[str, Any]]:
        """(h*w*M, D) float32 vectors (cell-major) and a JSON-able description."""
        h, w = self.grid
        vectors = np.ascontiguousarray(self.vectors).reshape(-1, self.dim)
        meta = {
            "format": FORMAT,
            "kind": self.memory,
            "k": self.k,
            "radius": self.radius,
            "grid": [h, w],
            "per_cell": self.per_cell,
            "dim": self.dim,
        }
        if self.rows is not None:
            meta["rows"] = self.rows.reshape(-1).tolist()
        return vectors, meta

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, meta: dict[str, Any]) -> PositionalMemory:
        """Inverse of ``to_arrays``; PositionalError if the two disagree."""
        if meta.get("format") != FORMAT:
            raise PositionalError(f"not a positional memory description (format {meta.get('format')!r})")
        try:
            h, w = (int(x) for x in meta["grid"])
            m, d = int(meta["per_cell"]), int(meta["dim"])
            memory, k, radius = str(meta["kind"]), int(meta["k"]), int(meta["radius"])
        except (KeyError, TypeError, ValueError) as e:
            raise PositionalError(f"positional memory description is incomplete: {e}") from e
        v = np.asarray(vectors)
        if v.shape != (h * w * m, d):
            raise PositionalError(
                f"vectors of shape {v.shape} do not match grid {h}x{w}, {m} per cell, dim {d}"
            )
        rows = meta.get("rows")
        if rows is not None:
            if not isinstance(rows, list) or len(rows) != h * w * m or not all(type(r) is int for r in rows):
                raise PositionalError(f"positional memory rows are not {h * w * m} integers")
            rows = np.asarray(rows, dtype=np.int64).reshape(h, w, m)
        return cls(memory, k, radius, v.reshape(h, w, m, d), rows)


def _k_smallest(x: np.ndarray, k: int) -> np.ndarray:
    """The k smallest values along the last axis (unordered), as a view; reorders ``x`` (a scratch array)."""
    if x.shape[-1] <= k:
        return x
    x.partition(k - 1, axis=-1)
    return x[..., :k]


# ---------------------------------------------------------------------- building


def build_positional(
    train: np.ndarray, radius: int, memory: str = "exact", per_cell: int = 0, k: int = 2, seed: int = 0,
    frames: bool = True,
) -> PositionalMemory:
    """Memory over ``train`` (T, h, w, D) patch grids, each cell built by the memory kind's
    ``select_per_cell`` (memories.py). ``per_cell``: vectors kept per cell by a sized memory (at least 1;
    at T or more every training vector is kept); 0 for exact. ``frames``: keep which training frame each
    compressed vector stands for (``rows``; global regions and tiles name their nearest normal frames; a
    patch grid has hundreds of cells and names none)."""
    x = np.asarray(train)
    if x.ndim != 4 or 0 in x.shape:
        raise PositionalError(
            f"training patch features must be a non-empty (T, h, w, D) array, got {x.shape}"
        )
    if memory not in MEMORIES:
        raise PositionalError(unknown(memory))
    sized = MEMORIES[memory].size_option is not None
    if not sized and per_cell:
        raise PositionalError(f"per_cell compresses a sized memory; {memory} keeps every vector")
    if sized and per_cell < 1:
        raise PositionalError(f"a {memory} memory needs per_cell of at least 1 (got {per_cell})")
    cells = np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(1, 2, 0, 3))  # (h, w, T, D)
    h, w, t, d = cells.shape
    with one_blas_thread():
        flat, rows = MEMORIES[memory].select_per_cell(cells.reshape(h * w, t, d), per_cell, seed, frames)
    if rows is not None:
        rows = rows.reshape(h, w, -1)
    return PositionalMemory(memory, k, radius, flat.reshape(h, w, -1, d), rows)
