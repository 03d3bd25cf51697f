"""Metrics with bootstrap intervals, computed for hundreds of resamples at once.

A bootstrap resample of n rows is n row indices drawn with replacement. ROC AUC
and average precision need, per resample, how many drawn rows fall in each
group of equal score (ties stay exactly tied, as scikit-learn treats them) and
how many of those are positive: one ``bincount`` over the drawn rows' keys,
then cumulative sums, for many resamples in one NumPy call. Only score groups
that hold a positive row can add to either metric, so counts are kept for
those groups alone. Brier and log loss are means of the drawn rows' losses.

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


def resamples(n: int, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """(chunk, n) arrays of drawn row indices, chunk by chunk; the same for the same seed."""
    rng = np.random.default_rng(seed)
    for start in range(0, replicates, CHUNK):
        yield rng.integers(0, n, size=(min(CHUNK, replicates - start), n))


def every_row(n: int) -> np.ndarray:
    """The rows as they are, as one "resample" that draws each row once."""
    return np.arange(n)[None, :]


class _Ranked:
    """Rows grouped by distinct score, ascending: what AUC and AP need, computed once.

    Only the groups holding a positive row ("hits") matter. Each row gets one
    counting key: the first hit group at or above its score, and whether it is
    a row below that group, a negative in it, or a positive in it. One
    ``bincount`` of the drawn rows' keys then gives every count AUC and AP use.
    """

    def __init__(self, y: np.ndarray, proba: np.ndarray) -> None:
        scores, group = np.unique(proba, return_inverse=True)
        positive = y.astype(bool)
        is_hit = np.zeros(len(scores), dtype=bool)
        is_hit[group[positive]] = True
        hit = np.flatnonzero(is_hit)
        self.hits = len(hit)
        column = np.searchsorted(hit, group)  # rows above the last hit land past it, and are dropped
        self.key = column * 3 + np.where(positive, 2, is_hit[group])

    def counts(self, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per resample (row of ``draws``), at each hit group: positives drawn in it, rows drawn
        in it, and rows drawn in lower groups."""
        r, width = draws.shape[0], 3 * (self.hits + 1)
        keys = self.key[draws] + np.arange(r)[:, None] * width
        counts = np.bincount(keys.ravel(), minlength=r * width).reshape(r, self.hits + 1, 3)[:, : self.hits]
        between, pos = counts[:, :, 0], counts[:, :, 2]
        at = counts[:, :, 1] + pos
        below = np.cumsum(between + at, axis=1) - at
        return np.ascontiguousarray(pos), at, below

    def roc_auc(self, draws: np.ndarray) -> np.ndarray:
        return roc_auc(*self.counts(draws), n=draws.shape[1])


def roc_auc(pos: np.ndarray, at: np.ndarray, below: np.ndarray, n: int) -> np.ndarray:
    """P(score of a positive > score of a negative), ties counting half, from per-group counts."""
    below_pos = np.cumsum(pos, axis=1) - pos
    wins = (pos * ((below - below_pos) + 0.5 * (at - pos))).sum(axis=1)
    positives = pos.sum(axis=1)
    return wins / (positives * (n - positives))


def average_precision(pos: np.ndarray, below: np.ndarray, n: int) -> np.ndarray:
    """Precision at each distinct threshold weighted by the recall it adds (scikit-learn's definition).

    At the threshold of group ``g`` every row scored at least as high is flagged: its
    true positives are all positives less those below ``g``, of the rows not below it.
    The counts are whole numbers, so every sum is exact.
    """
    below_pos = np.cumsum(pos, axis=1) - pos
    positives = pos.sum(axis=1)
    tp = positives[:, None] - below_pos
    precision = tp / np.maximum(n - below, 1)  # a hit group flags at least its own rows
    return (precision * pos).sum(axis=1) / positives


class _Scored:
    """One model's probabilities on fixed rows: every metric for any set of resamples."""

    def __init__(self, y: np.ndarray, proba: np.ndarray) -> None:
        y = np.asarray(y, dtype=np.float64)
        proba = np.asarray(proba, dtype=np.float64)
        self.ranked = _Ranked(y, proba)
        clipped = np.clip(proba, EPS, 1 - EPS)
        self.losses = {
            "brier": (proba - y) ** 2,
            "log_loss": -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)),
        }

    def metrics(self, draws: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric for each resample: each row of ``draws`` (shape (r, n)) holds drawn row indices."""
        n = draws.shape[1]
        pos, at, below = self.ranked.counts(draws)
        out = {"roc_auc": roc_auc(pos, at, below, n), "pr_auc": average_precision(pos, below, n)}
        for name, losses in self.losses.items():
            out[name] = losses[draws].mean(axis=1)
        return out


def point_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The four metrics on the rows as they are (equal to scikit-learn's, ties included)."""
    return {k: float(v[0]) for k, v in _Scored(y, proba).metrics(every_row(len(y))).items()}


def bootstrap_metrics(
    y: np.ndarray, proba: np.ndarray, replicates: int = REPLICATES, seed: int = SEED
) -> dict[str, Estimate]:
    """ROC AUC, PR AUC (average precision), Brier and log loss, each with a bootstrap 95% interval."""
    scored = _Scored(y, proba)
    point = {k: float(v[0]) for k, v in scored.metrics(every_row(len(y))).items()}
    samples: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for draws in resamples(len(y), replicates, seed):
        for name, values in scored.metrics(draws).items():
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
    rows = every_row(len(y))
    point = float(a.roc_auc(rows)[0] - b.roc_auc(rows)[0])
    differences = [a.roc_auc(draws) - b.roc_auc(draws) for draws in resamples(len(y), replicates, seed)]
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
