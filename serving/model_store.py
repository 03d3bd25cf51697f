"""The served model: a registered version, loaded as data and checked before it may serve.

Which version serves, and when it changes, is the services' business
(``serving.services``); this module loads one version and refuses it if it could
not serve what this API builds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from core.names import CHAMPION, TAG_PREFIX
from core.settings import Settings
from ml.artifacts import ModelRefused, load_model
from serving.compiled import CompiledModel, compile_pipeline
from serving.features import SERVED_FEATURES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version and what the API reports about it."""

    name: str
    version: str
    run_id: str
    model: Any  # a fitted sklearn Pipeline
    categorical: list[str]
    numeric: list[str]
    metrics: dict[str, float]
    lineage: dict[str, str]
    compiled: CompiledModel | None = None  # the same trees, walked without per-tree overhead

    # Small batches take the compiled walk; larger ones go to sklearn, whose
    # multithreaded per-tree loop spreads its fixed per-call cost over many rows.
    COMPILED_MAX_ROWS = 32

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def predict_proba(self, rows: list[dict[str, Any]]) -> Any:
        """P(late) for feature rows, typed exactly as at training (numerics as float64)."""
        if self.compiled is not None and len(rows) <= self.COMPILED_MAX_ROWS:
            return self.compiled.predict_proba(self.compiled.encode(rows, self.categorical, self.numeric))
        import pandas as pd

        frame = pd.DataFrame(rows, columns=self.features)
        frame[self.numeric] = frame[self.numeric].astype("float64")
        # None stays None, the category the encoder learned (ml.data.prepare): pandas
        # would read a text column's None as NaN, which the encoder treats as missing.
        categorical = frame[self.categorical].astype("object")
        frame[self.categorical] = categorical.where(categorical.notna(), None)
        return self.model.predict_proba(frame)[:, 1]


class ModelStore:
    """Loads registered model versions for serving, refusing any that fail a check."""

    # Reference rows must score alike through the compiled trees and through sklearn.
    TOLERANCE = 1e-9

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def champion_version(self) -> str:
        import mlflow

        alias = mlflow.MlflowClient().get_model_version_by_alias(self.settings.model_name, CHAMPION)
        return str(alias.version)

    def load(self, version: str) -> ServedModel:
        """Load ``version`` and check it can serve what this API builds.

        The checks, in order: the artifact is a skops scikit-learn Pipeline of
        trusted types (``ml.artifacts``); its input signature is the feature
        list its run recorded, and every one of those is a feature serving
        assembles; its run's prediction horizon is the one serving computes
        features at; its reference rows (the logged input example) score to
        probabilities, the same through the compiled trees as through sklearn.

        Raises:
            ModelRefused: a check failed; the message says which.
        """
        import mlflow

        client = mlflow.MlflowClient()
        name = self.settings.model_name
        mv = client.get_model_version(name, version)
        run = client.get_run(str(mv.run_id))
        artifact = load_model(f"models:/{name}/{version}")
        params = run.data.params
        categorical = [f for f in params.get("categorical_features", "").split(",") if f]
        numeric = [f for f in params.get("numeric_features", "").split(",") if f]
        if artifact.input_names != [*categorical, *numeric]:
            raise ModelRefused(
                f"v{version}'s input signature {artifact.input_names} is not the feature list its run recorded"
            )
        unknown = [f for f in artifact.input_names if f not in SERVED_FEATURES]
        if unknown:
            raise ModelRefused(f"v{version} needs features serving does not build: {', '.join(unknown)}")
        # The features mean "known this long before departure"; served at another horizon they
        # would be computed as of another instant than the model learned from.
        horizon = str(self.settings.prediction_horizon_minutes)
        learned = params.get("prediction_horizon_minutes", "an undeclared number of")
        if learned != horizon:
            raise ModelRefused(
                f"v{version} learned features as of {learned} min before departure;"
                f" this API computes them {horizon} min before (LAB_PREDICTION_HORIZON_MINUTES)"
            )
        lineage = {k: v for k, v in run.data.tags.items() if k.startswith((TAG_PREFIX, "mlflow.source.git"))}
        served = ServedModel(
            name,
            str(version),
            str(mv.run_id),
            artifact.pipeline,
            categorical,
            numeric,
            dict(run.data.metrics),
            lineage,
            compile_pipeline(artifact.pipeline, categorical, numeric),
        )
        self._score_reference_rows(served, artifact.example)
        return served

    def _score_reference_rows(self, served: ServedModel, rows: list[dict[str, Any]]) -> None:
        if not rows:
            raise ModelRefused(f"v{served.version} logged no input example to check it on")
        try:
            through_sklearn = np.asarray(replace(served, compiled=None).predict_proba(rows), dtype=float)
            through_compiled = (
                np.asarray(served.predict_proba(rows), dtype=float) if served.compiled else through_sklearn
            )
        except Exception as exc:  # whatever the model raises, it does not serve
            raise ModelRefused(f"v{served.version} fails on its reference rows: {exc!r}") from None
        if not (np.isfinite(through_sklearn).all() and ((through_sklearn >= 0) & (through_sklearn <= 1)).all()):
            raise ModelRefused(f"v{served.version} scores its reference rows outside [0, 1]")
        if np.abs(through_compiled - through_sklearn).max() > self.TOLERANCE:
            raise ModelRefused(f"v{served.version}'s compiled trees disagree with scikit-learn on its reference rows")
