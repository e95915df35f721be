"""Frames a person marked "normal" become a new, immutable index version.

Only explicit marks count: nothing here reads the stream, so a persistent fault
can never teach itself to be normal. Each version records how many marked
frames it absorbed, which ones, and from whom (``IndexMeta.feedback``).

How an index absorbs marked embeddings depends on its features (global or patch)
and its memory kind (``memories.py``: exact, kmeans or coreset); every memory
kind absorbs them (``absorb_global``, its rule from the kind's ``Memory`` entry;
patch indexes first go through ``patch_rows``):

- every global memory: each marked embedding is held, ``k`` times. DN2 scores
  a frame by the mean distance to its k nearest normals, so a single copy of an
  isolated frame only divides its score by k and can leave it above the
  threshold; k copies make the marked appearance itself score 0 and its
  near-duplicates score by their distance to it, which is what "this was
  normal" means. No held vector moves and none is dropped, so no other
  frame's score can rise.
- ``exact`` (a memory that holds its training set, ``Memory.holds_training_set``):
  the threshold is recalibrated: leave-one-out scores of the fitted training
  vectors against the new set, at the version's target false-alarm rate. The
  marked frames themselves are left out of the calibration: they were flagged
  because they are far from everything else, and a quantile over them would
  raise the threshold for every other frame.
- ``kmeans``: the marked frames become centres of their own, not a refit. A
  k-means version stores only its C centres, not the training embeddings a
  refit needs; and a false alarm is by definition far from every centre, so
  moving the nearest centre towards it would drag that centre off the normals
  it summarises (raising their scores) and still leave the marked frame far.
  The threshold cannot be recalibrated without training embeddings; it is kept,
  and since scores can only fall, the previous calibration's false-alarm rate
  remains an upper bound (recorded in the version's calibration).
- ``coreset``: the marked frames are added to the kept training vectors. Its
  vectors are the training embeddings farthest apart, whose leave-one-out
  scores are not those of unseen normals, so the threshold is kept, as for
  k-means.
- positional memories (global tiles, ``--position-radius``; index_store/positional.py): each
  marked frame's grid is added at its own cells, k copies each, so every cell of
  the marked frame then scores 0 against its own position and nothing else can
  score higher than before. The threshold is kept, as for patch indexes.
- ``patch`` (any memory: exact, k-means, coreset): of each marked frame's grid
  of patch features, only the cells that score over half the threshold (the
  region that raised the alarm) need teaching; they are compressed by greedy
  k-center selection (PatchCore's coreset rule) until each lies within half the
  threshold of a kept one, and the kept cells are added, k copies each, as new
  memory entries. The marked frame then scores at most half its threshold at
  the cells it was flagged for, and the memory grows by a few entries, not by
  a whole frame. The threshold is kept: it was calibrated on frame scores (the
  worst cell), which a per-patch recalibration cannot reproduce, and added
  entries only lower scores.

Arrays in, arrays out; ``publish_marked`` is the one function that touches the repository.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from index_store import knn
from index_store.errors import IndexStoreError
from index_store.fitting import score_sketch, threshold_at
from index_store.memories import MEMORIES, unknown
from index_store.repository import IndexMeta, IndexRepository


class FeedbackError(IndexStoreError):
    """Marked frames cannot be absorbed (no marks, a wrong dimension or grid, an unknown memory kind)."""


@dataclass(frozen=True)
class Mark:
    """One frame a person marked normal: its id and who said so (a name or an address)."""

    frame_id: str
    by: str
    source: str = ""


@dataclass(frozen=True)
class Absorbed:
    index: knn.KnnIndex
    threshold: Optional[float]
    calibration: dict[str, Any]
    method: str


def _fit_vectors(meta: IndexMeta) -> int:
    """How many leading vectors of this version came from the fit (the rest are marked frames)."""
    return int(meta.feedback.get("n_fit_vectors", meta.n_vectors))


def absorb_global(meta: IndexMeta, index: knn.KnnIndex, emb: np.ndarray) -> Absorbed:
    """Marked global embeddings held k times each, by the index's memory kind's rule (module docstring)."""
    memory = MEMORIES[index.memory]
    vectors = np.concatenate([index.vectors, np.repeat(emb, index.k, axis=0)])
    new = knn.KnnIndex(index.memory, index.k, vectors)
    if not memory.holds_training_set:
        calibration = {**meta.calibration, "threshold_kept": memory.threshold_kept}
        return Absorbed(new, meta.threshold, calibration, memory.feedback_method)
    base = index.vectors[: _fit_vectors(meta)]
    target = float(meta.calibration.get("target_fpr", 0.01))
    if len(base) < 2:
        return Absorbed(new, meta.threshold, dict(meta.calibration), memory.feedback_method)
    loo = knn.knn_sqdist(vectors, base, index.k + 1)[:, 1:].mean(axis=1)  # drop each vector itself
    threshold = threshold_at(loo, target)
    calibration = {
        **meta.calibration,
        "threshold": threshold,
        "method": "leave-one-out",
        "target_fpr": target,
        "n_scores": int(loo.size),
        "score_quantiles": score_sketch(loo),  # drift (worker/drift.py) is measured against these scores
        "previous_threshold": meta.threshold,
        "previous_method": meta.calibration.get("method", "given"),
    }
    return Absorbed(new, threshold, calibration, memory.feedback_method)


PATCH_HOT = 0.9  # cells of a marked frame scoring over this fraction of the threshold are taught
PATCH_COVER = 0.5  # each taught cell ends within this fraction of the threshold of a kept one


def patch_rows(index: knn.KnnIndex, grids: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """(N, h, w, D) patch grids of marked frames -> the cells to add, stacked (M, D).

    The cells scoring over PATCH_HOT x ``threshold`` (all cells without one) are kept by greedy
    k-center, farthest first, until each lies within PATCH_COVER x ``threshold`` of a kept one.
    """
    radius = PATCH_COVER * threshold if threshold else None
    rows = [np.zeros((0, index.dim), np.float32)]
    for grid in np.asarray(grids, dtype=np.float32):
        cells = grid.reshape(-1, grid.shape[-1])
        hot = cells if not threshold else cells[index.score(cells) > PATCH_HOT * threshold]
        if not len(hot):
            continue
        kept = [0]
        nearest = ((hot - hot[0]) ** 2).sum(axis=1)
        while len(kept) < len(hot) and nearest.max() > (radius or 0.0):
            far = int(nearest.argmax())
            kept.append(far)
            nearest = np.minimum(nearest, ((hot - hot[far]) ** 2).sum(axis=1))
        rows.append(hot[kept])
    return np.concatenate(rows)


def absorb_patch(meta: IndexMeta, index: knn.KnnIndex, rows: np.ndarray) -> Absorbed:
    vectors = np.concatenate([index.vectors, np.repeat(rows, index.k, axis=0)])
    calibration = {
        **meta.calibration,
        "threshold_kept": "patch thresholds are calibrated on frame scores (the worst cell); added "
        "patches only lower scores, so the previous false-alarm rate is an upper bound",
    }
    return Absorbed(knn.KnnIndex(index.memory, index.k, vectors), meta.threshold, calibration, "patch-coreset")


def absorb_positional(meta: IndexMeta, index: Any, grids: np.ndarray) -> Absorbed:
    """(N, h, w, D) marked grids appended at their own cells, k copies each (module docstring)."""
    from index_store.positional import PositionalMemory

    grids = np.asarray(grids, dtype=np.float32)
    if grids.ndim != 4 or grids.shape[1:3] != index.grid or grids.shape[-1] != index.dim:
        raise FeedbackError(f"marked frames give grids of shape {grids.shape[1:]}, index {meta.name!r} holds "
                            f"{index.grid} x {index.dim}")  # fmt: skip
    added = np.repeat(grids.transpose(1, 2, 0, 3), index.k, axis=2)
    h, w, m = index.vectors.shape[:3]
    rows = None  # a patch grid names no frames (positional.build_positional)
    if index.rows is not None or not meta.embedder_spec.is_patch:
        rows = index.rows if index.rows is not None else np.broadcast_to(np.arange(m, dtype=np.int32), (h, w, m))
        rows = np.concatenate([rows, np.full(added.shape[:3], -1, np.int32)], axis=2)  # marked frames: none
    memory = PositionalMemory(index.memory, index.k, index.radius, np.concatenate([index.vectors, added], axis=2), rows)
    calibration = {**meta.calibration, "threshold_kept": "marked frames only lower scores at their own cells"}
    return Absorbed(memory, meta.threshold, calibration, "positional-append")


def absorb(
    meta: IndexMeta, index: knn.KnnIndex, embeddings: np.ndarray, marks: Sequence[Mark],
    clock: Callable[[], float] = time.time,
) -> tuple[IndexMeta, knn.KnnIndex]:  # fmt: skip
    """The next version's metadata (version 0: set on publish) and index, with ``marks`` absorbed."""
    if not marks or len(marks) != len(embeddings):
        raise FeedbackError(f"{len(embeddings)} embeddings for {len(marks)} marked frames")
    if meta.kind not in MEMORIES:
        raise FeedbackError(f"index {meta.name!r}: {unknown(meta.kind)}")
    if hasattr(index, "search_grid"):
        out = absorb_positional(meta, index, embeddings)
        return _next_version(meta, out, marks, index.k, clock), out.index  # type: ignore[return-value]
    is_patch = meta.embedder_spec.is_patch
    emb = knn.as_f32(patch_rows(index, embeddings, meta.threshold) if is_patch else embeddings)
    if emb.shape[1] != index.dim:
        raise FeedbackError(
            f"marked frames embed to dimension {emb.shape[1]}, index {meta.name!r} has {index.dim}"
        )
    out = (absorb_patch if is_patch else absorb_global)(meta, index, emb)
    return _next_version(meta, out, marks, index.k, clock), out.index


def _next_version(
    meta: IndexMeta, out: Absorbed, marks: Sequence[Mark], copies: int, clock: Callable[[], float]
) -> IndexMeta:
    """The absorbed version's metadata (version 0: set on publish), with what it absorbed and from whom."""
    previous_total = int(meta.feedback.get("total_absorbed", 0))
    feedback = {
        "absorbed": len(marks),
        "total_absorbed": previous_total + len(marks),
        "by": dict(Counter(m.by for m in marks)),
        "frames": [m.frame_id for m in marks],
        "base_version": meta.version,
        "method": out.method,
        "copies": copies,
        "n_fit_vectors": _fit_vectors(meta),
        "at": clock(),
    }
    n_vectors = out.index.to_arrays()[0].shape[0] if hasattr(out.index, "to_arrays") else out.index.size
    return dataclasses.replace(
        meta, version=0, created_at=0.0, sha256="", n_chunks=0, n_vectors=n_vectors,
        threshold=out.threshold, calibration=out.calibration, feedback=feedback,
    )  # fmt: skip


def publish_marked(
    repo: IndexRepository, name: str, embeddings: np.ndarray, marks: Sequence[Mark],
    base_version: Optional[int] = None,
) -> IndexMeta:  # fmt: skip
    """Absorb ``marks`` into the active version (or ``base_version``) and publish + activate the result atomically.

    Callers that may run concurrently for one index must serialise their calls:
    two absorptions from the same base would each miss the other's frames.
    """
    meta, index = repo.load(name, base_version)
    new_meta, new_index = absorb(meta, index, embeddings, marks)
    return repo.publish(new_meta, new_index, activate=True, adapted=repo.load_adapted(meta),
                        quantized=repo.load_quantized(meta))  # fmt: skip


def embed_images(meta: IndexMeta, images: Sequence[Any], embedder: Any) -> np.ndarray:
    """Embed PIL images with ``embedder``, refusing one whose spec is not the index's (the scores would not compare)."""
    if embedder.spec.fingerprint() != meta.embedder_spec.fingerprint():
        raise FeedbackError(
            f"index {meta.name!r} was built with {meta.embedder_spec.label()}, not {embedder.spec.label()}"
        )
    return np.asarray(embedder.embed(list(images)), dtype=np.float32)
