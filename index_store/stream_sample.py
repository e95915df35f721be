"""Choosing training frames from a camera's stream: sample across the period, drop near-duplicates,
set aside held-out frames for calibration.

A folder of hand-picked images is varied by construction; a stream is not. A
camera that sees an empty yard all night sends thousands of frames that differ
only by sensor noise, and fitted as they come they would outnumber the day's
frames in the index and in the calibration quantile. So:

- ``pick``: every K-th frame, or ``max_frames`` spread evenly over the period
  (by position in time order), so every part of the period is represented;
- ``dedup``: greedy, in time order: a frame is dropped when its squared
  distance to a frame already kept is below ``factor`` times the mean squared
  distance between two frames of the sample (the scene's own spread, so the
  rule needs no per-backbone constant). A static stretch collapses to a few
  frames; frames that differ as much as normal frames usually do all stay;
- ``holdout_rows``: every ``every``-th of the kept frames, interleaved across
  the period, so calibration sees the same hours as training.

Arrays in, arrays out.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from index_store.stream_defaults import DEDUP as DEFAULT_DEDUP
from index_store.stream_defaults import HOLDOUT_EVERY


def pick(n: int, every: Optional[int] = None, max_frames: Optional[int] = None) -> np.ndarray:
    """Positions (ascending) of the frames to use out of ``n`` in time order."""
    rows = np.arange(n)
    if every and every > 1:
        rows = rows[::every]
    if max_frames is not None and len(rows) > max_frames:
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, max_frames).round().astype(int))]
    return rows


def pooled(feats: np.ndarray) -> np.ndarray:
    """(N, D) vectors to compare frames by: global embeddings, or the mean of each patch grid."""
    return feats.mean(axis=(1, 2)) if feats.ndim == 4 else feats


def pair_scale(vectors: np.ndarray) -> float:
    """Mean squared distance between two of these frames (twice the mean squared distance to their centre):
    how far apart this camera's frames are. A mean, not a median: a static stretch is most of the pairs,
    and a median would measure the sensor noise inside it."""
    if len(vectors) < 2:
        return 0.0
    centred = vectors - vectors.mean(axis=0)
    return float(2.0 * np.einsum("ij,ij->i", centred, centred).mean())


def dedup(feats: np.ndarray, factor: float = DEFAULT_DEDUP) -> np.ndarray:
    """Rows kept (ascending) after dropping near-duplicates of earlier kept rows; ``factor`` 0 keeps all."""
    n = len(feats)
    if factor <= 0 or n < 2:
        return np.arange(n)
    vectors = np.ascontiguousarray(pooled(feats), dtype=np.float32)
    tau = factor * pair_scale(vectors)
    if tau <= 0:  # every frame identical: keep one
        return np.arange(1)
    sq = np.einsum("ij,ij->i", vectors, vectors)
    kept = [0]
    nearest = sq - 2.0 * vectors @ vectors[0] + sq[0]  # squared distance of each row to its nearest kept row
    for i in range(1, n):
        if nearest[i] < tau:
            continue
        kept.append(i)
        np.minimum(nearest, sq - 2.0 * vectors @ vectors[i] + sq[i], out=nearest)
    return np.asarray(kept)


def holdout_rows(n: int, every: int = HOLDOUT_EVERY, minimum_train: int = 3) -> np.ndarray:
    """Every ``every``-th of ``n`` rows (from the middle of each block), none when too few would be left to train."""
    if n < minimum_train + 1 or every < 2:
        return np.zeros(0, dtype=int)
    return np.arange(every // 2, n, every)
