"""Fit an index from training embeddings: clean, build its memory (exact, k-means or coreset), calibrate a threshold.

Arrays in, arrays out. Global embeddings are (N, D); patch features are
(N, h, w, D), and the index then holds the memory of normal patches (every
location of every kept image, compressed by k-means or a coreset).
Calibration sets the threshold at the (1 - target_fpr) quantile of scores of
normal images the index has not seen: a held-out set when given, otherwise
leave-one-out on the training set (a memory that holds the training set itself,
``Memory.holds_training_set``: exact; global features) or a 20% split of the images
(k-means centres and coresets, whose selection has seen every training point, and
every patch index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from index_store import anomaly_maps, knn
from index_store.errors import IndexStoreError
from index_store.memories import MEMORIES
from index_store.spec import PATCH_DEFAULT_CLUSTERS, EmbedderSpec

__all__ = ["PATCH_DEFAULT_CLUSTERS", "Calibration", "FitConfig", "FitError", "build", "fit", "kept_rows", "score",
           "score_sketch"]


@dataclass(frozen=True)
class FitConfig:
    clusters: Optional[int] = None  # None = exact kNN; C = k-means with C centres
    k: int = 2
    clean_fraction: float = 0.0
    target_fpr: float = 0.01
    seed: int = 0
    coreset: Optional[int] = None  # C = keep C training vectors by greedy coreset (instead of k-means)

    def __post_init__(self) -> None:
        """Checked when the config is made, so a bad flag fails before minutes of embedding."""
        problems = [
            f"{name} {rule}"
            for name, ok, rule in (
                ("k", self.k >= 1, f"must be at least 1 (got {self.k})"),
                ("clusters", self.clusters is None or self.clusters >= 0, f"must be 0 (exact) or more (got {self.clusters})"),
                ("coreset", self.coreset is None or self.coreset >= 0, f"must be 0 (off) or more (got {self.coreset})"),
                ("clusters and coreset", not (self.clusters and self.coreset), "cannot both be given"),
                ("clean fraction", 0.0 <= self.clean_fraction < 1.0, f"must be in [0, 1) (got {self.clean_fraction})"),
                ("target FPR", 0.0 < self.target_fpr < 1.0, f"must be in (0, 1) (got {self.target_fpr})"),
            )
            if not ok
        ]
        if problems:
            raise FitError("; ".join(problems))

    @property
    def memory(self) -> str:
        """The memory kind (memories.py): the sized one whose option is given, else the one that is not sized."""
        given = [m.name for m in MEMORIES.values() if m.size_option and getattr(self, m.size_option)]
        return given[0] if given else next(m.name for m in MEMORIES.values() if not m.size_option)

    @property
    def size(self) -> int:
        """C of the sized memory (0: a memory that keeps every vector)."""
        option = MEMORIES[self.memory].size_option
        return int(getattr(self, option) or 0) if option else 0

    @property
    def label(self) -> str:
        """The method's name in reports: exact, C=10 (k-means), coreset=1000."""
        return MEMORIES[self.memory].label.format(size=self.size)


class FitError(IndexStoreError):
    """The fit cannot give a usable index: bad settings, or too few normal images to calibrate."""


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
    # Quantile sketch {"p": [...], "score": [...]} of the calibration scores: what a worker measures a
    # camera's score drift against (worker/drift.py). Metadata, not spec: older workers ignore it.
    score_quantiles: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_at(scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold that flags at most ``target_fpr`` of these normal scores."""
    if scores.size == 0:
        raise ValueError("no scores to calibrate on")
    if not 0.0 < target_fpr < 1.0:
        raise ValueError("target false-positive rate must be in (0, 1)")
    return float(np.quantile(scores, 1.0 - target_fpr, method="higher"))


SKETCH_P = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0)


def score_sketch(scores: np.ndarray) -> dict[str, list[float]]:
    """Scores at the SKETCH_P quantiles, for the metadata (17 numbers, whatever the calibration set's size)."""
    return {"p": list(SKETCH_P), "score": [float(q) for q in np.quantile(scores, SKETCH_P)]}


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
        score_quantiles=score_sketch(scores),
    )


def build(train: np.ndarray, cfg: FitConfig, spec: Optional[EmbedderSpec] = None) -> Any:
    """The index over ``train``: (N, D) embeddings, or (N, h, w, D) patch features (all locations).

    A spec whose memory is positional (global tiles, ``position_radius``) keeps where each vector was seen
    (index_store/positional.py): global tiles are compared with their own tile position only."""
    if spec is not None and spec.positional and train.ndim == 4:
        from index_store.positional import build_positional

        radius = spec.position_radius if spec.is_patch else 0
        return build_positional(train, radius, cfg.memory, per_cell=cfg.size, k=cfg.k, seed=cfg.seed,
                                frames=not spec.is_patch)  # fmt: skip
    if train.ndim == 4:
        train = train.reshape(-1, train.shape[-1])
    return knn.build(cfg.memory, train, cfg.size, cfg.k, cfg.seed)


def score(index: Any, feats: np.ndarray, spec: Optional[EmbedderSpec] = None) -> np.ndarray:
    """(N,) frame scores: the index's rule on global embeddings, the worst location (outside the spec's
    ignore zones) on patch grids and global tile grids."""
    return anomaly_maps.score_maps(index, feats, spec)[0] if feats.ndim == 4 else index.score(feats)


def fit(
    train: np.ndarray, cfg: FitConfig, holdout: Optional[np.ndarray] = None, spec: Optional[EmbedderSpec] = None
) -> tuple[Any, Calibration, np.ndarray]:
    """Returns (index, calibration, indices of the training images kept after cleaning).

    ``spec``: where the features came from; its geometry decides the memory (positional or not) and
    which cells calibration leaves out (ignore zones), as the worker will."""
    train = np.ascontiguousarray(train, dtype=np.float32)
    kept = kept_rows(train, cfg)
    clean_train = train[kept]
    has_holdout = holdout is not None and len(holdout) > 0
    if not has_holdout and len(clean_train) < cfg.k + 1:
        raise FitError(
            f"{len(clean_train)} normal image(s) left after cleaning: calibrating a threshold needs at least "
            f"k + 1 = {cfg.k + 1} (each is scored against the others); add images or pass --holdout"
        )
    index = build(clean_train, cfg, spec)
    if holdout is not None and len(holdout):
        cal = _calibration(score(index, holdout, spec), "holdout", cfg.target_fpr)
    elif MEMORIES[cfg.memory].holds_training_set and train.ndim == 2:
        cal = _calibration(knn.leave_one_out_scores(clean_train, cfg.k), "leave-one-out", cfg.target_fpr)
    else:
        cal = _calibration(_split_scores(clean_train, cfg, spec), "split", cfg.target_fpr)
    return index, cal, kept


def kept_rows(train: np.ndarray, cfg: FitConfig) -> np.ndarray:
    """Cleaning ranks whole images: patch grids are judged by their mean-pooled feature."""
    if not cfg.clean_fraction:
        return np.arange(len(train))
    pooled = train.mean(axis=(1, 2)) if train.ndim == 4 else train
    return knn.clean(pooled, cfg.clean_fraction, cfg.k)


def _split_scores(train: np.ndarray, cfg: FitConfig, spec: Optional[EmbedderSpec] = None) -> np.ndarray:
    """Scores of a random 20% of the training images against an index fit on the other 80%."""
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    n_cal = max(1, len(train) // 5)
    if len(train) - n_cal < 1:
        if train.ndim == 4:
            return score(build(train, cfg, spec), train, spec)  # one image: its own patches (optimistic)
        return knn.leave_one_out_scores(train, cfg.k)
    part = build(train[order[n_cal:]], cfg, spec)
    return score(part, train[order[:n_cal]], spec)
