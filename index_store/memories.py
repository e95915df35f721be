"""The memory kinds of an index, one entry each: how it is built, scored, calibrated and taught by feedback.

framewatch used to call two things "kind". The *features* (``EmbedderSpec.kind``:
``global`` | ``patch``, index_store/registry.py) say what one vector describes:
a whole frame or one location of it. The *memory* (this module: ``exact`` |
``kmeans`` | ``coreset``) says which vectors an index keeps of its training
set. Any features go with any memory. Stored records keep the field name
``kind`` for both (the spec's ``kind``, ``IndexMeta.kind``, a positional
layout's ``"kind"``): renaming them would change fingerprints and refuse
every stored index.

Every caller (fitting.py, knn.py, positional.py, device_knn.py, feedback.py,
build.py, validation.py, the CLI) asks ``MEMORIES`` instead of testing kind
names, so a new memory kind is one ``Memory`` entry here (plus, if it has a
size, its ``FitConfig`` field and command-line flag).

Arrays in, arrays out: numpy and faiss only, so every part of the index store can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from index_store import selection

CellRows = Optional[np.ndarray]


@dataclass(frozen=True)
class Memory:
    """One memory kind. ``select`` and ``select_per_cell`` take float32 vectors and a size C (0 for a
    memory that is not ``sized``); ``reduce`` turns (N, k) squared distances, nearest first, into (N,) scores."""

    name: str
    # The fit option (FitConfig field, ``--flag`` of ``index fit`` / ``eval``) that sets C; None: not sized.
    size_option: Optional[str]
    # Build: (N, D) training vectors -> (M, D) held vectors.
    select: Callable[[np.ndarray, int, int], np.ndarray]
    # Build per grid cell (positional.py): (P, T, D) -> (P, M, D) held vectors and, when ``frames`` is
    # asked for, (P, M) the training row each stands for (None: the training rows in order).
    select_per_cell: Callable[[np.ndarray, int, int, bool], tuple[np.ndarray, CellRows]]
    # Score: the DN2 rule on the k nearest held vectors.
    reduce: Callable[[np.ndarray], np.ndarray]
    # Calibration and feedback: True when the held vectors are the (cleaned) training set itself, in
    # order. Then leave-one-out scores are scores of unseen normals (a fair calibration without a
    # held-out set), feedback recalibrates the threshold the same way, and held vector i is training
    # frame i. Otherwise calibration scores a 20% split against the other 80%, and feedback keeps the
    # threshold for the reason in ``threshold_kept`` (added vectors only lower scores).
    holds_training_set: bool
    # Feedback: the method recorded in a version's ``feedback`` (and, unless ``holds_training_set``, why the
    # threshold is kept). Every kind absorbs marked frames by holding them, k copies each (feedback.py).
    feedback_method: str
    threshold_kept: str = ""
    # Reports: the method's name in evaluation tables and benchmarks, ``{size}`` filled in ("C=10" as in DN2).
    label: str = ""


def _mean(sqdist: np.ndarray) -> np.ndarray:
    return sqdist.mean(axis=1)


def _sum(sqdist: np.ndarray) -> np.ndarray:
    return sqdist.sum(axis=1)


def _all(train: np.ndarray, size: int, seed: int) -> np.ndarray:
    return train


def _all_per_cell(cells: np.ndarray, size: int, seed: int, frames: bool) -> tuple[np.ndarray, CellRows]:
    return cells, None


def _coreset(train: np.ndarray, size: int, seed: int) -> np.ndarray:
    return train[selection.coreset_rows(train, size, seed)]


def _coreset_per_cell(cells: np.ndarray, size: int, seed: int, frames: bool) -> tuple[np.ndarray, CellRows]:
    if size >= cells.shape[1]:
        return cells, None
    chosen = selection.coreset_rows_per_cell(cells, size, seed)
    return np.take_along_axis(cells, chosen[:, :, None], axis=1), chosen if frames else None


def _kmeans(train: np.ndarray, size: int, seed: int) -> np.ndarray:
    return selection.kmeans_centres(train, size, seed)


def _kmeans_per_cell(cells: np.ndarray, size: int, seed: int, frames: bool) -> tuple[np.ndarray, CellRows]:
    if size >= cells.shape[1]:
        return cells, None
    centres = selection.kmeans_per_cell(cells, size, seed)
    return centres, selection.nearest_training_rows(cells, centres) if frames else None


MEMORIES: dict[str, Memory] = {
    m.name: m
    for m in (
        # DN2: every training embedding; d(y) = mean over the k nearest of ||y - x||^2.
        Memory(
            name="exact",
            size_option=None,
            select=_all,
            select_per_cell=_all_per_cell,
            reduce=_mean,
            holds_training_set=True,
            feedback_method="append",
            label="exact",
        ),
        # DN2's k-means approximation: C centres; d(y) = sum over the k nearest centres (C = N ranks as exact).
        Memory(
            name="kmeans",
            size_option="clusters",
            select=_kmeans,
            select_per_cell=_kmeans_per_cell,
            reduce=_sum,
            holds_training_set=False,
            feedback_method="new-centres",
            threshold_kept="k-means versions store no training embeddings to recalibrate on; "
            "added centres only lower scores, so the previous false-alarm rate is an upper bound",
            label="C={size}",
        ),
        # PatchCore's memory compression: C training embeddings by greedy farthest-point; scored as exact.
        Memory(
            name="coreset",
            size_option="coreset",
            select=_coreset,
            select_per_cell=_coreset_per_cell,
            reduce=_mean,
            holds_training_set=False,
            feedback_method="new-vectors",
            threshold_kept="a coreset keeps the training embeddings farthest apart, whose leave-one-out scores "
            "are not those of unseen normals; added vectors only lower scores, so the previous false-alarm "
            "rate is an upper bound",
            label="coreset={size}",
        ),
    )
}
NAMES = tuple(MEMORIES)


def unknown(name: object) -> str:
    """The one line every caller says about a memory kind it does not know."""
    return f"memory kind must be one of {', '.join(NAMES)}, not {name!r}"
