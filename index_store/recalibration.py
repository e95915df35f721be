"""A new threshold for the same vectors, from a camera's recent frames (``index recalibrate``).

When a scene drifts (lighting changed, a new fixture), refitting throws away
what the index knows; often only the threshold is off. The recent frames are
scored against the version's own vectors, the frames reviewers confirmed as
anomalies are left out (they are what the threshold must keep flagging), and
the threshold is set at the version's target false-alarm rate over the rest
(``fitting.threshold_at``, the rule every fit uses).

The frames should postdate the version's training frames: an exact index scores
its own training frames 0, which would pull the threshold down.

Arrays in, arrays out.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from index_store.fitting import FitError, score_sketch, threshold_at
from index_store.repository import IndexMeta


@dataclass(frozen=True)
class Recalibrated:
    meta: IndexMeta  # version 0: set on publish
    scored: int  # frames scored
    left_out: int  # confirmed anomalies left out
    rate_before: float  # share of the kept frames over the old threshold
    rate_after: float  # ... over the new one


def alarm_rate(scores: np.ndarray, threshold: Optional[float]) -> float:
    """Share of scores a worker would flag (``score > threshold``, as worker/scoring.py decides)."""
    if threshold is None or scores.size == 0:
        return float("nan")
    return float(np.mean(scores > threshold))


def recalibrate(
    meta: IndexMeta,
    scores: np.ndarray,
    confirmed: np.ndarray,
    target_fpr: Optional[float] = None,
    frames: Optional[dict[str, Any]] = None,
) -> Recalibrated:
    """``scores`` of recent frames against ``meta``'s vectors; ``confirmed`` marks the reviewers' anomalies.

    :raises FitError: no frame is left to calibrate on.
    """
    kept = np.asarray(scores, dtype=np.float64)[~np.asarray(confirmed, dtype=bool)]
    if kept.size == 0:
        raise FitError(
            f"none of the {len(scores)} frames is left to recalibrate on (all confirmed anomalies)"
        )
    fpr = float(target_fpr if target_fpr is not None else meta.calibration.get("target_fpr", 0.01))
    threshold = threshold_at(kept, fpr)
    before, after = alarm_rate(kept, meta.threshold), alarm_rate(kept, threshold)
    calibration = {
        "threshold": threshold,
        "method": "recalibrated",
        "target_fpr": fpr,
        "n_scores": int(kept.size),
        "score_mean": float(kept.mean()),
        "score_p50": float(np.quantile(kept, 0.5)),
        "score_p99": float(np.quantile(kept, 0.99)),
        "score_max": float(kept.max()),
        "score_quantiles": score_sketch(kept),  # what workers measure drift against (worker/drift.py)
        "left_out_confirmed": int(len(scores) - kept.size),
        "previous_version": meta.version,
        "previous_threshold": meta.threshold,
        "alarm_rate_before": round(before, 6),
        "alarm_rate_after": round(after, 6),
        "frames": frames or {},
    }
    new = dataclasses.replace(meta, version=0, threshold=threshold, calibration=calibration, created_at=0.0,
                              sha256="", n_chunks=0)  # fmt: skip
    return Recalibrated(new, int(len(scores)), int(len(scores) - kept.size), before, after)
