"""Bootstrap metrics: the vectorised resamples equal scikit-learn's weighted metrics, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from ml.evaluation import (
    REPLICATES,
    _Scored,
    at_threshold,
    bootstrap_metrics,
    paired_auc_difference,
    point_metrics,
    resamples,
)

SKLEARN = {
    "roc_auc": roc_auc_score,
    "pr_auc": average_precision_score,
    "brier": brier_score_loss,
    "log_loss": log_loss,
}


def _scores(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(float)
    # Rounded to two decimals: many exact ties, within and across the classes.
    proba = np.round(np.clip(0.2 + 0.2 * (y - 0.2) + rng.normal(0, 0.12, n), 0.01, 0.99), 2)
    return y, proba


def test_point_metrics_equal_sklearn_with_ties() -> None:
    y, proba = _scores()
    assert len(np.unique(proba)) < 100  # ties everywhere
    for name, value in point_metrics(y, proba).items():
        assert value == pytest.approx(SKLEARN[name](y, proba), abs=1e-12), name


def test_every_resample_equals_sklearn_weighted_by_its_counts() -> None:
    y, proba = _scores()
    draws = next(resamples(len(y), 5, seed=7))
    counts = np.stack([np.bincount(row, minlength=len(y)) for row in draws])
    assert counts.shape == (5, len(y)) and (counts.sum(axis=1) == len(y)).all()
    assert (counts == 0).any(axis=1).all() and (counts > 1).any(axis=1).all()  # some rows never, some twice
    metrics = _Scored(y, proba).metrics(draws)
    for name, values in metrics.items():
        for i, weights in enumerate(counts):
            assert values[i] == pytest.approx(SKLEARN[name](y, proba, sample_weight=weights), abs=1e-12), name


def test_intervals_are_seeded_and_hold_the_point() -> None:
    y, proba = _scores()
    first, again, other = bootstrap_metrics(y, proba), bootstrap_metrics(y, proba), bootstrap_metrics(y, proba, seed=99)
    assert first == again
    assert first != other
    for estimate in first.values():
        assert estimate.lo < estimate.value < estimate.hi
    # 4,000 rows: the AUC interval is a few hundredths wide, not zero and not everything.
    assert 0.01 < first["roc_auc"].hi - first["roc_auc"].lo < 0.1


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    y, proba = _scores()
    same = paired_auc_difference(y, proba, proba.copy())
    assert (same.value, same.lo, same.hi) == (0.0, 0.0, 0.0)


def test_paired_difference_sees_a_small_real_improvement() -> None:
    y, proba = _scores(n=20_000)
    rng = np.random.default_rng(3)
    worse = np.clip(proba + rng.normal(0, 0.02, len(y)), 0.0, 1.0)  # the same model, with noise added
    gap = paired_auc_difference(y, proba, worse)
    assert gap.value == pytest.approx(roc_auc_score(y, proba) - roc_auc_score(y, worse), abs=1e-12)
    assert 0 < gap.lo < gap.value < gap.hi
    # Pairing is what makes it visible: the two AUCs' own intervals overlap.
    alone, noisy = bootstrap_metrics(y, proba)["roc_auc"], bootstrap_metrics(y, worse)["roc_auc"]
    assert noisy.hi > alone.lo


def test_precision_and_recall_at_the_threshold() -> None:
    y = np.array([1, 1, 0, 0, 1, 0])
    proba = np.array([0.9, 0.5, 0.6, 0.1, 0.2, 0.49])
    assert at_threshold(y, proba, 0.5) == {"precision": 2 / 3, "recall": 2 / 3, "flagged_share": 0.5}


def test_replicates_is_a_few_hundred() -> None:
    assert 200 <= REPLICATES <= 1000
