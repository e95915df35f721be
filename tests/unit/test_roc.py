"""Our ROC-AUC (Mann-Whitney with average ranks) against scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from evaluation.evaluate import average_ranks, roc_auc


@pytest.mark.parametrize("seed", range(8))
def test_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]  # both classes present
    # coarse integer scores: many ties, shifted up a little for the positives
    scores = np.round(rng.normal(size=n) * 2 + labels * rng.uniform(0, 2))
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_continuous_scores() -> None:
    rng = np.random.default_rng(42)
    labels = rng.random(1000) < 0.3
    scores = rng.normal(size=1000) + labels
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_extremes() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    assert roc_auc(labels, np.array([1, 2, 3, 4, 5])) == 1.0
    assert roc_auc(labels, np.array([5, 4, 3, 2, 1])) == 0.0
    assert roc_auc(labels, np.zeros(5)) == 0.5  # all tied: chance


def test_average_ranks() -> None:
    assert average_ranks(np.array([10.0, 20.0, 10.0, 30.0])).tolist() == [1.5, 3.0, 1.5, 4.0]


def test_needs_both_classes() -> None:
    with pytest.raises(ValueError):
        roc_auc(np.ones(3), np.arange(3.0))
