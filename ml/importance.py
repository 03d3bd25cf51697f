"""What a model relies on, per feature: plotted with its run, and weighing drift in its monitoring.

Split gain for the boosted trees (read from the model, no rows scored);
permutation importance on a sample of the validation window for the logistic
baseline, which has no trees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from ml import factories
from ml.data import TrainingSet
from ml.evaluation import point_metrics

# The baseline's permutation importance: a fixed sample of the validation window, shuffles per feature.
IMPORTANCE_ROWS = 3_000
IMPORTANCE_REPEATS = 2


def split_gain_importance(pipeline: Pipeline) -> tuple[list[str], np.ndarray]:
    """(feature names, each one's share of the loss reduction made by all the boosted trees' splits).

    The model's own account of what it used (the "gain" importance of
    LightGBM and XGBoost), read from its trees in milliseconds and scored on
    no rows at all. It favours features with many distinct values, which
    permutation importance does not; but shuffling each feature through a
    boosted model was the dearest part of a run's reporting, and ``lab train``
    is meant to cost less than twice its fit (``bench/train.py``).
    """
    model = factories.boosted(pipeline)
    assert model is not None
    gains = np.zeros(model.n_features_in_)
    for (tree,) in model._predictors:  # one tree per iteration for a binary model
        split = ~tree.nodes["is_leaf"].astype(bool)
        np.add.at(gains, tree.nodes["feature_idx"][split], tree.nodes["gain"][split])
    names = [str(name) for name in pipeline[0].get_feature_names_out()]
    return names, gains / gains.sum()


def permutation_importance(
    pipeline: Pipeline, x: pd.DataFrame, y: np.ndarray, repeats: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Drop in ROC AUC when each column of ``x`` is shuffled: (mean, std) over ``repeats`` shuffles.

    Every shuffled copy goes through the model in one call (scikit-learn's
    ``permutation_importance`` calls it once per feature and shuffle).
    """
    rng = np.random.default_rng(seed)
    copies = []
    for column in x.columns:
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[column] = rng.permutation(shuffled[column].to_numpy())
            copies.append(shuffled)
    proba = factories.positive_proba(pipeline, pd.concat(copies, ignore_index=True))
    base = point_metrics(y, factories.positive_proba(pipeline, x))["roc_auc"]
    per_copy = proba.reshape(x.shape[1], repeats, len(x))
    drops = np.array([[base - point_metrics(y, p)["roc_auc"] for p in per_feature] for per_feature in per_copy])
    return drops.mean(axis=1), drops.std(axis=1)


@dataclass(frozen=True)
class Importance:
    """What the model relies on, per feature: plotted with the run, and weighing drift in monitoring."""

    names: list[str]
    values: np.ndarray
    spread: np.ndarray | None
    measure: str
    title: str

    def spread_of(self, order: np.ndarray) -> np.ndarray | None:
        return None if self.spread is None else self.spread[order]

    def shares(self) -> dict[str, float]:
        """Each feature's share of the total (negative permutation drops count as none)."""
        clipped = np.clip(self.values, 0, None)
        total = clipped.sum()
        return {name: float(v / total) if total > 0 else 0.0 for name, v in zip(self.names, clipped, strict=True)}


def feature_importance(pipeline: Pipeline, data: TrainingSet) -> Importance:
    """Split gain for the boosted trees; for the logistic baseline, permutation on a validation sample."""
    if factories.boosted(pipeline) is not None:
        names, share = split_gain_importance(pipeline)
        measure = "share of the loss reduction made by the trees' splits"
        return Importance(names, share, None, measure, "Split-gain importance (boosted trees)")
    # The logistic baseline has no trees: what shuffling each feature costs in ROC AUC, on a
    # fixed sample of the validation window (data the model was not fitted to).
    sample = data.validation.sample(n=min(IMPORTANCE_ROWS, len(data.validation)), random_state=factories.SEED)
    mean, std = permutation_importance(pipeline, *data.xy(sample), IMPORTANCE_REPEATS, factories.SEED)
    return Importance(
        list(data.features), mean, std, "drop in ROC AUC when shuffled", "Permutation importance (validation window)"
    )
