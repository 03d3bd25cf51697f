"""Model factories: each returns an *unfitted* scikit-learn Pipeline.

The gradient-boosted model sees every feature; it handles missing values
natively (unknown planes, weather gaps, routes without history), so nothing is
imputed behind its back. The baseline is what a careful analyst would try first:
a logistic regression on the published schedule (carrier, route, hour, weekday).
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
    # Small, heavily populated leaves: with a time split, deeper trees learn the
    # training months' quirks rather than what carries over to later months.
    defaults: dict[str, object] = {
        "learning_rate": 0.05,
        "max_iter": 500,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 1000,
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
