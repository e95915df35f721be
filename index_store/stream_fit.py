"""Fitting an index on frames sampled from a camera's stream (``index fit --from-topic``).

The folder path (``build.fit_from_images``) trusts its images and cleans only
on request. A stream is contaminated (whatever happened in front of the camera
during the period is in it) and repetitive, so here the order is:

1. near-duplicates dropped (``stream_sample.dedup``);
2. cleaned: the ``clean_fraction`` of frames with the largest leave-one-out kNN
   distance dropped (DN2's unsupervised setting, ``knn.clean``), before the
   split, so that anomalies leave the held-out frames as well as the training
   frames. Calibrating on an uncleaned held-out set would put the threshold at
   the contamination's scores: at 10 % contamination and a 1 % target the
   quantile lands among the anomalies;
3. split: every fifth kept frame held out (``stream_sample.holdout_rows``);
4. fitted and calibrated on the held-out frames with ``fitting.fit`` (the
   folder path's code), or on a ``--holdout`` folder when one is given.

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
from index_store.fitting import FitConfig, FitError, fit
from index_store.repository import IndexMeta
from index_store.stream_defaults import CLEAN_FRACTION as STREAM_CLEAN_FRACTION

__all__ = ["STREAM_CLEAN_FRACTION", "StreamFit", "fit_stream"]


@dataclass(frozen=True)
class StreamFit:
    meta: IndexMeta
    index: knn.KnnIndex
    counts: dict[str, int]  # frames at each step: embedded, deduplicated, cleaned, train, holdout


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
    clean = unique
    if cfg.clean_fraction:
        clean = unique[knn.clean(stream_sample.pooled(feats[unique]), cfg.clean_fraction, cfg.k)]
    held = np.zeros(0, dtype=int) if holdout is not None else stream_sample.holdout_rows(len(clean))
    train_rows = np.delete(clean, held)
    if len(train_rows) == 0:
        raise FitError(
            f"no frames left to fit on ({len(feats)} embedded, {len(unique)} after de-duplication)"
        )
    cal_feats = holdout if holdout is not None else feats[clean[held]]
    plain = dataclasses.replace(cfg, clean_fraction=0.0)  # cleaned above, before the split
    index, cal, _ = fit(feats[train_rows], plain, cal_feats if len(cal_feats) else None)
    counts = {"embedded": len(feats), "deduplicated": len(unique), "cleaned": len(clean),
              "train": len(train_rows), "holdout": len(cal_feats)}  # fmt: skip
    train_origins = [origins[i] for i in train_rows]
    meta = IndexMeta(
        name=name,
        kind=index.kind,
        k=index.k,
        dim=index.dim,
        n_vectors=index.size,
        spec=spec,
        clusters=cfg.clusters or cfg.coreset,
        n_train=len(train_rows),
        threshold=cal.threshold,
        calibration={**cal.to_dict(), "fit_seconds": round(time.perf_counter() - t0, 3)},
        clean_fraction=cfg.clean_fraction,
        origins=vector_origins(train_origins, feats[train_rows], np.arange(len(train_rows)), index),
        frames_from={**(frames_from or {}), "counts": counts, "dedup": dedup_factor},
    )
    return StreamFit(meta, index, counts)
