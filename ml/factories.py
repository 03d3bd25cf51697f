"""Model factories (each returns an *unfitted* scikit-learn Pipeline), fitting and calibration.

The gradient-boosted model sees every feature the tuning kept; it handles
missing values natively (unknown planes, weather gaps, routes without
history), so nothing is imputed behind its back. The baseline is what a
careful analyst would try first: a logistic regression on the published
schedule (carrier, route, hour, weekday).

Both are fitted on the training window. The validation window decides the
rest: the boosted model stops adding trees when its log loss there stops
improving, and either model's probabilities are recalibrated on it when a
check inside it says they need it (``calibration_check``).
"""

from __future__ import annotations

import itertools
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

SEED = 13
# What the tuning search (ml/tuning.py) chooses among; everything else is fixed here.
TUNABLE = ("learning_rate", "max_leaf_nodes", "min_samples_leaf", "l2_regularization")
# The fixed part. max_iter is a ceiling: early stopping on the validation window
# decides how many trees are kept (patience: 20 iterations without a better
# validation log loss).
BOOSTING_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 1000,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 1000,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "n_iter_no_change": 20,
}


def gradient_boosting(categorical: list[str], numeric: list[str], seed: int = SEED, **params: Any) -> Pipeline:
    """HistGradientBoosting over ordinal-encoded categoricals and raw numerics.

    Args:
        categorical: string feature columns (unknown values map to "missing").
        numeric: numeric feature columns, missing values allowed.
        seed: random state for reproducible fits.
        params: overrides of ``BOOSTING_DEFAULTS`` for HistGradientBoostingClassifier.
    """
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value",
                    unknown_value=-1,
                    encoded_missing_value=-1,
                    dtype=float,
                ),
                categorical,
            ),
            ("numeric", "passthrough", numeric),
        ],
        verbose_feature_names_out=False,
    )
    model = HistGradientBoostingClassifier(
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
        random_state=seed,
        **{**BOOSTING_DEFAULTS, **params},
    )
    return Pipeline([("encode", encode), ("model", model)])


SCHEDULE_CATEGORICAL = ["carrier", "origin", "dest"]
SCHEDULE_NUMERIC = ["departure_hour_local", "day_of_week"]


def baseline(categorical: list[str], numeric: list[str], seed: int = SEED) -> Pipeline:
    """Logistic regression on the published schedule alone (carrier, route, hour, weekday).

    The feature lists are accepted for a uniform factory signature; only the
    schedule features among them are used.
    """
    encode = ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", min_frequency=50),
                [c for c in SCHEDULE_CATEGORICAL if c in categorical],
            ),
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                [c for c in SCHEDULE_NUMERIC if c in numeric],
            ),
        ]
    )
    return Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=500, random_state=seed))])


def fit(
    pipeline: Pipeline, x_train: pd.DataFrame, y_train: np.ndarray, x_val: pd.DataFrame, y_val: np.ndarray
) -> Pipeline:
    """Fit on the training window; a boosted model stops early on the validation window.

    The encoder is fitted on the training window only and the validation rows
    go through it, as they will at prediction time.
    """
    model = pipeline.steps[-1][1]
    if not isinstance(model, HistGradientBoostingClassifier) or not model.early_stopping:
        return pipeline.fit(x_train, y_train)
    encode = pipeline[:-1]  # the same step objects: fitting this fits the pipeline's encoder
    model.fit(encode.fit_transform(x_train, y_train), y_train, X_val=encode.transform(x_val), y_val=y_val)
    return pipeline


def predicting() -> AbstractContextManager[object]:
    """Predictions on one OpenMP thread, inside the ``with`` block.

    A boosted model predicts tree by tree, each tree one OpenMP parallel
    region. On a machine whose cores are busy, every region waits for a second
    thread to be scheduled, so one thread is faster than two there; fitting is
    left to use every core.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def positive_proba(model: Any, x: pd.DataFrame | np.ndarray, workers: int = 2) -> np.ndarray:
    """P(positive class) for the rows of ``x``, predicted in ``workers`` chunks side by side (``_in_chunks``)."""
    return _in_chunks(lambda rows: model.predict_proba(rows)[:, 1], x, workers)


def raw_score(pipeline: Pipeline, x: pd.DataFrame, workers: int = 2) -> np.ndarray:
    """The model's own score before any calibration (its log-odds of late), chunked as ``positive_proba``.

    Scoring a window once this way gives every probability a run reports,
    calibrated or not (``proba_from_raw``), without predicting it again.
    """
    from sklearn.calibration import CalibratedClassifierCV

    model = pipeline.steps[-1][1]
    if isinstance(model, CalibratedClassifierCV):
        raise ValueError("raw_score takes the model before calibration")
    return _in_chunks(pipeline.decision_function, x, workers)


def proba_from_raw(pipeline: Pipeline, raw: np.ndarray) -> np.ndarray:
    """What ``positive_proba(pipeline, x)`` answers, from ``raw_score`` of the model inside it on ``x``.

    Both models' probability is the logistic of their score; a Platt-scaled
    pipeline (``platt_scaled``) applies its one fitted sigmoid to that score
    instead, as ``CalibratedClassifierCV`` does for one frozen binary model.
    """
    parts = platt_parts(pipeline.steps[-1][1])
    if parts is None:
        raise ValueError("proba_from_raw knows the calibration platt_scaled adds, no other")
    _, sigmoid = parts
    return np.asarray(expit(raw) if sigmoid is None else sigmoid.predict(raw))


def platt_parts(model: Any) -> tuple[Any, Any] | None:
    """(the model under ``platt_scaled``'s calibration, its fitted sigmoid); (model, None) when uncalibrated.

    Only ``CalibratedClassifierCV(FrozenEstimator(model), method="sigmoid")``
    fitted once (one sigmoid on the decision function) is taken apart; None
    for any other calibration.
    """
    from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
    from sklearn.frozen import FrozenEstimator

    if not isinstance(model, CalibratedClassifierCV):
        return model, None
    if model.method != "sigmoid" or len(model.calibrated_classifiers_) != 1:
        return None
    calibrated = model.calibrated_classifiers_[0]
    frozen, calibrators = calibrated.estimator, calibrated.calibrators
    if not isinstance(frozen, FrozenEstimator) or len(calibrators) != 1:
        return None
    if not isinstance(calibrators[0], _SigmoidCalibration) or list(model.classes_) != list(frozen.classes_):
        return None
    return frozen.estimator, calibrators[0]


def _in_chunks(predict: Any, x: pd.DataFrame | np.ndarray, workers: int) -> np.ndarray:
    """``predict`` on ``x`` cut in ``workers`` chunks, each in its own thread on one OpenMP thread.

    The trees' loops release the GIL, so two chunks use two cores without
    the per-tree barrier two OpenMP threads need (``predicting``), and are no
    slower than one thread when other jobs hold the cores.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(rows: pd.DataFrame | np.ndarray) -> np.ndarray:
        with predicting():
            return np.asarray(predict(rows))

    if len(x) < 10_000 or workers == 1:
        return one(x)
    bounds = np.linspace(0, len(x), workers + 1).astype(int)
    chunks = [x[a:b] for a, b in itertools.pairwise(bounds)]
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(one, chunks)))


def boosted(pipeline: Pipeline) -> HistGradientBoostingClassifier | None:
    """The boosted model inside a (possibly Platt-scaled) pipeline, or None."""
    parts = platt_parts(pipeline.steps[-1][1])
    model = parts[0] if parts is not None else None
    return model if isinstance(model, HistGradientBoostingClassifier) else None


@dataclass(frozen=True)
class CalibrationCheck:
    """Platt scaling fitted on the validation window's earlier days, judged on its later days."""

    calibrate: bool
    fitted_until: date  # Platt fitted on validation days up to here; judged after
    log_loss_as_is: float  # on the later days, the model's own probabilities
    log_loss_platt: float  # on the later days, after Platt scaling fitted on the earlier ones


def calibration_check(raw_val: np.ndarray, y_val: np.ndarray, days: np.ndarray) -> CalibrationCheck:
    """Should the probabilities be recalibrated? Decided inside the validation window, by time.

    Platt scaling (a logistic fit on the model's raw score: two numbers) is
    fitted on the first half of the validation days and judged on the second
    half against the probabilities as they are; it is used when it lowers the
    log loss there. A time split because that is how it will be used: fitted
    on earlier months, applied to later ones.

    Args:
        raw_val: ``raw_score`` of the uncalibrated model on the validation rows.
        days: the local flight date of each validation row.
    """
    from sklearn.calibration import _SigmoidCalibration
    from sklearn.metrics import log_loss

    distinct = np.unique(days)
    if len(distinct) < 2:
        raise ValueError("the validation window spans one day; a calibration check needs two")
    fitted_until = distinct[len(distinct) // 2 - 1]
    early, late = days <= fitted_until, days > fitted_until
    # The sigmoid CalibratedClassifierCV fits on a frozen binary model (``platt_scaled``), on the early days.
    platt = _SigmoidCalibration().fit(raw_val[early], y_val[early]).predict(raw_val[late])
    before, after = float(log_loss(y_val[late], expit(raw_val[late]))), float(log_loss(y_val[late], platt))
    return CalibrationCheck(after < before, fitted_until, before, after)


def platt_scaled(pipeline: Pipeline, raw: np.ndarray, y: np.ndarray) -> Pipeline:
    """A new pipeline: the same fitted encoder and model, its raw score Platt-scaled on (rows, y).

    The model is frozen (not refitted); the calibrator is one sigmoid
    ``1 / (1 + exp(a * score + b))`` on its decision function, which the
    compiled serving path applies as two numbers.

    Args:
        raw: ``raw_score(pipeline, rows)``: the rows are not scored again.

    The result is the estimator ``CalibratedClassifierCV(FrozenEstimator(model),
    method="sigmoid").fit(encoded rows, y)`` builds, attribute for attribute (a
    test compares the two): that ``fit`` only asks the frozen model for these
    same scores (in five folds) and fits the sigmoid on them.
    """
    from sklearn.calibration import CalibratedClassifierCV, _fit_calibrator
    from sklearn.frozen import FrozenEstimator

    model = pipeline.steps[-1][1]
    frozen = FrozenEstimator(model)  # cloning a frozen estimator returns it: fit shares it the same way
    calibrated = CalibratedClassifierCV(frozen, method="sigmoid")
    calibrated.classes_ = np.unique(y)
    scores = np.asarray(raw, dtype=np.float64).reshape(-1, 1)
    calibrated.calibrated_classifiers_ = [_fit_calibrator(frozen, scores, y, calibrated.classes_, "sigmoid", xp=np)]
    calibrated.n_features_in_ = model.n_features_in_
    if hasattr(model, "feature_names_in_"):
        calibrated.feature_names_in_ = model.feature_names_in_
    return Pipeline([*pipeline.steps[:-1], ("model", calibrated)])
