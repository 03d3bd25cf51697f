"""Metrics with bootstrap intervals, computed for hundreds of resamples at once.

A bootstrap resample of n rows is a vector of counts (how often each row was
drawn). Every metric here is a weighted sum over rows, so a resample's metric
is the metric with those counts as weights. For ROC AUC and average precision
the rows are first grouped by distinct score (ties stay exactly tied, as
scikit-learn treats them), so one resample costs one ``bincount`` over the
groups and a cumulative sum, for many resamples in one NumPy call.

Intervals are percentile intervals (2.5th and 97.5th) over ``REPLICATES``
seeded resamples. The gate's interval is *paired*: both models are scored on
the same resampled rows, so what the flights have in common cancels out.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

REPLICATES = 400
SEED = 13
# Resamples per NumPy batch: bounds memory at a few (rows x CHUNK) arrays. Small enough that
# each batch reuses the memory the last one freed, rather than faulting in fresh pages.
CHUNK = 25
METRICS = ("roc_auc", "pr_auc", "brier", "log_loss")
# Probabilities are clipped this far from 0 and 1 in the log loss, as scikit-learn does.
EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Estimate:
    """A metric on the rows as they are, and its bootstrap 95% interval."""

    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.4f} [{self.lo:.4f}, {self.hi:.4f}]"


def resample_counts(n: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """(chunk, n) arrays of how often each row is drawn, chunk by chunk; the same for the same seed."""
    rng = np.random.default_rng(seed)
    for start in range(0, replicates, CHUNK):
        size = min(CHUNK, replicates - start)
        draws = rng.integers(0, n, size=(size, n))
        offsets = (np.arange(size) * n)[:, None]
        yield np.bincount((draws + offsets).ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


class _Ranked:
    """Rows grouped by distinct score, ascending: what AUC and AP need, computed once."""

    def __init__(self, y: np.ndarray, proba: np.ndarray) -> None:
        self.scores, group = np.unique(proba, return_inverse=True)
        self.key = group * 2 + y.astype(np.int64)  # (score group, class) of each row

    def by_group(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positives, negatives) weight per score group, one row per row of ``weights``: one bincount."""
        k, r = len(self.scores), weights.shape[0]
        index = (self.key[None, :] + (np.arange(r) * 2 * k)[:, None]).ravel()
        counts = np.bincount(index, weights.ravel(), minlength=r * 2 * k).reshape(r, k, 2)
        return counts[:, :, 1], counts[:, :, 0]

    def roc_auc(self, weights: np.ndarray) -> np.ndarray:
        return roc_auc(*self.by_group(weights))


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """P(score of a positive > score of a negative), ties counting half, from per-group weights."""
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    return wins / (pos.sum(axis=1) * neg.sum(axis=1))  # type: ignore[no-any-return]


def average_precision(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Precision at each distinct threshold weighted by the recall it adds (scikit-learn's definition).

    At the threshold of group ``g`` every row scored at least as high is flagged: its true
    positives are all positives less those below ``g``. Cumulative sums run forward
    (along memory), and with whole-number weights every sum is exact.
    """
    up_to_pos = np.cumsum(pos, axis=1)  # weight in groups 0..g, g included
    up_to_neg = np.cumsum(neg, axis=1)
    tp = up_to_pos[:, -1:] - up_to_pos + pos
    predicted = tp + up_to_neg[:, -1:] - up_to_neg + neg
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    return (precision * pos).sum(axis=1) / up_to_pos[:, -1]  # type: ignore[no-any-return]


class _Scored:
    """One model's probabilities on fixed rows: every metric for any set of row weights."""

    def __init__(self, y: np.ndarray, proba: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        proba = np.asarray(proba, dtype=np.float64)
        self.ranked = _Ranked(y, proba)
        clipped = np.clip(proba, EPS, 1 - EPS)
        self.losses = {
            "brier": (proba - y) ** 2,
            "log_loss": -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)),
        }

    def metrics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric for each row of ``weights`` (shape (k, n))."""
        pos, neg = self.ranked.by_group(weights)
        out = {"roc_auc": roc_auc(pos, neg), "pr_auc": average_precision(pos, neg)}
        total = weights.sum(axis=1)
        for name, losses in self.losses.items():
            out[name] = weights @ losses / total
        return out


def point_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The four metrics on the rows as they are (equal to scikit-learn's, ties included)."""
    return {k: float(v[0]) for k, v in _Scored(y, proba).metrics(np.ones((1, len(y)))).items()}


def bootstrap_metrics(
    y: np.ndarray, proba: np.ndarray, replicates: int = REPLICATES, seed: int = SEED
) -> dict[str, Estimate]:
    """ROC AUC, PR AUC (average precision), Brier and log loss, each with a bootstrap 95% interval."""
    scored = _Scored(y, proba)
    point = {k: float(v[0]) for k, v in scored.metrics(np.ones((1, len(y)))).items()}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for counts in resample_counts(len(y), replicates, seed):
        for name, values in scored.metrics(counts).items():
            samples[name].append(values)
    out = {}
    for name in METRICS:
        lo, hi = np.nanpercentile(np.concatenate(samples[name]), [2.5, 97.5])
        out[name] = Estimate(point[name], float(lo), float(hi))
    return out


def paired_auc_difference(
    y: np.ndarray, proba_a: np.ndarray, proba_b: np.ndarray, replicates: int = REPLICATES, seed: int = SEED
) -> Estimate:
    """ROC AUC of ``a`` minus that of ``b`` on the same rows, and its paired bootstrap 95% interval.

    Each resample draws one set of rows and scores both models on it.
    """
    y = np.asarray(y, dtype=np.float64)
    a, b = _Ranked(y, np.asarray(proba_a, dtype=np.float64)), _Ranked(y, np.asarray(proba_b, dtype=np.float64))
    ones = np.ones((1, len(y)))
    point = float(a.roc_auc(ones)[0] - b.roc_auc(ones)[0])
    differences = [a.roc_auc(counts) - b.roc_auc(counts) for counts in resample_counts(len(y), replicates, seed)]
    lo, hi = np.nanpercentile(np.concatenate(differences), [2.5, 97.5])
    return Estimate(point, float(lo), float(hi))


def at_threshold(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and the share flagged when every probability >= ``threshold`` is answered "late"."""
    flagged = np.asarray(proba) >= threshold
    y = np.asarray(y).astype(bool)
    true_positives = float((flagged & y).sum())
    return {
        "precision": true_positives / float(flagged.sum()) if flagged.any() else float("nan"),
        "recall": true_positives / float(y.sum()) if y.any() else float("nan"),
        "flagged_share": float(flagged.mean()),
    }
