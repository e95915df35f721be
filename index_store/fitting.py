"""Fit an index from training embeddings: clean, build (exact or k-means), calibrate a threshold.

Arrays in, arrays out. Calibration sets the threshold at the (1 - target_fpr)
quantile of scores of normal images the index has not seen: a held-out set
when given, otherwise leave-one-out on the training set (exact) or a 20% split
(k-means, whose centres have seen every training point).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from index_store import knn


@dataclass(frozen=True)
class FitConfig:
    clusters: Optional[int] = None  # None = exact kNN; C = k-means with C centres
    k: int = 2
    clean_fraction: float = 0.0
    target_fpr: float = 0.01
    seed: int = 0

    @property
    def kind(self) -> str:
        return "exact" if not self.clusters else "kmeans"


@dataclass(frozen=True)
class Calibration:
    threshold: float
    method: str  # "holdout" | "leave-one-out" | "split"
    target_fpr: float
    n_scores: int
    score_mean: float
    score_p50: float
    score_p99: float
    score_max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_at(scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold that flags at most ``target_fpr`` of these normal scores."""
    if scores.size == 0:
        raise ValueError("no scores to calibrate on")
    if not 0.0 < target_fpr < 1.0:
        raise ValueError("target false-positive rate must be in (0, 1)")
    return float(np.quantile(scores, 1.0 - target_fpr, method="higher"))


def _calibration(scores: np.ndarray, method: str, target_fpr: float) -> Calibration:
    return Calibration(
        threshold=threshold_at(scores, target_fpr),
        method=method,
        target_fpr=target_fpr,
        n_scores=int(scores.size),
        score_mean=float(scores.mean()),
        score_p50=float(np.quantile(scores, 0.5)),
        score_p99=float(np.quantile(scores, 0.99)),
        score_max=float(scores.max()),
    )


def build(train: np.ndarray, cfg: FitConfig) -> knn.KnnIndex:
    if cfg.kind == "exact":
        return knn.build_exact(train, cfg.k)
    assert cfg.clusters is not None
    return knn.build_kmeans(train, cfg.clusters, cfg.k, seed=cfg.seed)


def fit(
    train: np.ndarray, cfg: FitConfig, holdout: Optional[np.ndarray] = None
) -> tuple[knn.KnnIndex, Calibration, np.ndarray]:
    """Returns (index, calibration, indices of the training embeddings kept after cleaning)."""
    train = knn.as_f32(train)
    kept = knn.clean(train, cfg.clean_fraction, cfg.k) if cfg.clean_fraction else np.arange(len(train))
    clean_train = train[kept]
    index = build(clean_train, cfg)
    if holdout is not None and len(holdout):
        cal = _calibration(index.score(holdout), "holdout", cfg.target_fpr)
    elif cfg.kind == "exact":
        cal = _calibration(knn.leave_one_out_scores(clean_train, cfg.k), "leave-one-out", cfg.target_fpr)
    else:
        cal = _calibration(_split_scores(clean_train, cfg), "split", cfg.target_fpr)
    return index, cal, kept


def _split_scores(train: np.ndarray, cfg: FitConfig) -> np.ndarray:
    """Scores of a random 20% of the training set against an index fit on the other 80%."""
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    n_cal = max(1, len(train) // 5)
    if len(train) - n_cal < 1:
        return knn.leave_one_out_scores(train, cfg.k)
    part = build(train[order[n_cal:]], cfg)
    return part.score(train[order[:n_cal]])
