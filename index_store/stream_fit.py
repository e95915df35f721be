"""Fitting an index on frames sampled from a camera's stream (``index fit --from-topic``).

The folder path (``build.fit_from_images``) trusts its images and cleans only
on request. A stream is contaminated (whatever happened in front of the camera
during the period is in it) and repetitive, so here the order is:

1. near-duplicates dropped (``stream_sample.dedup``);
2. split: every fifth frame held out (``stream_sample.holdout_rows``),
   interleaved, so calibration sees the same hours as training;
3. the training frames cleaned: the ``clean_fraction`` with the largest
   leave-one-out kNN distance dropped (DN2's unsupervised setting, ``knn.clean``);
4. the held-out frames cleaned too, by their score against the cleaned index:
   those past Tukey's fence (log score above Q3 + 1.5 IQR of the held-out log
   scores) are dropped as anomalies. Not by the same fraction: dropping the top
   20 % of held-out scores would put the threshold near their 80th percentile,
   a 20 % false-alarm rate whatever the target. A contaminating anomaly scores
   several times a normal frame; under 1 % of normal frames are past the fence
   (the far-out fence, 3 IQR, let most anomalies of a 10 % contaminated camera
   through, and they set its threshold: docs/accuracy.md);
5. fitted (``fitting.fit``, the folder path's code) and calibrated on the
   cleaned held-out frames, or on a ``--holdout`` folder when one is given.

Arrays in, arrays out.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from index_store import knn, stream_sample
from index_store.build import vector_origins
from index_store.fitting import FitConfig, FitError, build, fit, score
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec
from index_store.stream_defaults import CLEAN_FRACTION as STREAM_CLEAN_FRACTION

__all__ = ["STREAM_CLEAN_FRACTION", "StreamFit", "fit_stream"]


@dataclass(frozen=True)
class StreamFit:
    meta: IndexMeta
    index: knn.KnnIndex
    counts: dict[str, int]  # frames: embedded, deduplicated, held_out (split off), train (after cleaning),
    # holdout (calibrated on: held_out less the far-out ones, or the --holdout folder)


def fit_stream(
    name: str,
    feats: np.ndarray,
    origins: Sequence[str],
    spec: dict[str, Any],
    cfg: FitConfig,
    dedup_factor: float = stream_sample.DEFAULT_DEDUP,
    holdout: Optional[np.ndarray] = None,
    frames_from: Optional[dict[str, Any]] = None,
) -> StreamFit:
    """Dedup, clean, split and fit ``feats`` (time order, one per origin); metadata at version 0."""
    t0 = time.perf_counter()
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    unique = stream_sample.dedup(feats, dedup_factor)
    held = unique[stream_sample.holdout_rows(len(unique))] if holdout is None else np.zeros(0, dtype=int)
    train_rows = np.setdiff1d(unique, held)
    if cfg.clean_fraction:
        train_rows = train_rows[knn.clean(stream_sample.pooled(feats[train_rows]), cfg.clean_fraction, cfg.k)]
    if len(train_rows) == 0:
        raise FitError(
            f"no frames left to fit on ({len(feats)} embedded, {len(unique)} after de-duplication)"
        )
    plain = dataclasses.replace(cfg, clean_fraction=0.0)  # cleaned above
    geometry = EmbedderSpec.from_dict(spec)  # positional memories (global regions, tiles) need it
    held_out = len(held)
    if holdout is None and len(held):
        held = held[~far_out(score(build(feats[train_rows], plain, geometry), feats[held], geometry))]
    cal_feats = holdout if holdout is not None else feats[held]
    index, cal, _ = fit(feats[train_rows], plain, cal_feats if len(cal_feats) else None, spec=geometry)
    counts = {"embedded": len(feats), "deduplicated": len(unique), "train": len(train_rows),
              "held_out": held_out, "holdout": len(cal_feats)}  # fmt: skip
    train_origins = [origins[i] for i in train_rows]
    meta = IndexMeta(
        name=name,
        kind=index.memory,  # the stored field keeps its name
        k=index.k,
        dim=index.dim,
        n_vectors=index.to_arrays()[0].shape[0] if hasattr(index, "to_arrays") else index.size,
        spec=spec,
        clusters=cfg.size or None,
        n_train=len(train_rows),
        threshold=cal.threshold,
        calibration={**cal.to_dict(), "fit_seconds": round(time.perf_counter() - t0, 3)},
        clean_fraction=cfg.clean_fraction,
        origins=vector_origins(train_origins, feats[train_rows], np.arange(len(train_rows)), index),
        frames_from={**(frames_from or {}), "counts": counts, "dedup": dedup_factor},
    )
    return StreamFit(meta, index, counts)


def far_out(scores: np.ndarray, fence: float = 1.5) -> np.ndarray:
    """Scores past Tukey's fence on the log scale (kNN scores are skewed to the right)."""
    if len(scores) < 4:
        return np.zeros(len(scores), dtype=bool)
    logs = np.log(np.maximum(scores, 1e-12))
    q1, q3 = np.quantile(logs, [0.25, 0.75])
    return logs > q3 + fence * (q3 - q1)
