"""Model factories: each returns an *unfitted* scikit-learn Pipeline.

The gradient-boosted model sees every feature; it handles missing values
natively (unknown planes, weather gaps, routes without history), so nothing is
imputed behind its back. The baseline is what a careful analyst would try first:
a logistic regression on the schedule (carrier, origin, hour, month).
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

SEED = 13


def gradient_boosting(categorical: list[str], numeric: list[str], seed: int = SEED, **params: object) -> Pipeline:
    """HistGradientBoosting over ordinal-encoded categoricals and raw numerics.

    Args:
        categorical: string feature columns (unknown values map to "missing").
        numeric: numeric feature columns, missing values allowed.
        seed: random state for reproducible fits.
        params: overrides for HistGradientBoostingClassifier.
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
    defaults: dict[str, object] = {
        "learning_rate": 0.08,
        "max_iter": 300,
        "max_leaf_nodes": 63,
        "min_samples_leaf": 100,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "validation_fraction": 0.1,
        "n_iter_no_change": 20,
    }
    model = HistGradientBoostingClassifier(
        categorical_features=[True] * len(categorical) + [False] * len(numeric),
        random_state=seed,
        **{**defaults, **params},  # type: ignore[arg-type]
    )
    return Pipeline([("encode", encode), ("model", model)])


def baseline(categorical: list[str], numeric: list[str], seed: int = SEED) -> Pipeline:
    """Logistic regression: one-hot categoricals, scaled and median-imputed numerics."""
    encode = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore", min_frequency=50), categorical),
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ]
    )
    return Pipeline([("encode", encode), ("model", LogisticRegression(max_iter=500, random_state=seed))])
