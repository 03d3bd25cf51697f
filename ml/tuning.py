"""The tuning search: every choice made by measurement, made on the validation window only.

What is chosen: the boosted model's ``learning_rate``, ``max_leaf_nodes``,
``min_samples_leaf`` and ``l2_regularization``, and whether ``month_of_year``
is a feature (with one year of data the training months never include the
months scored later, so the trees can only extrapolate it; whether that helps
is measured, not assumed). How many trees is chosen by early stopping on the
validation window inside every fit.

The search, with a fixed budget and seed:

1. ``CONFIGURATIONS`` hyperparameter settings: the previous defaults
   (``ml.factories.BOOSTING_DEFAULTS``) first, then distinct draws from ``SPACE``
   by ``numpy.random.default_rng(seed)``;
2. each setting twice, without and with ``month_of_year`` (so that choice is
   compared at equal hyperparameters): ``2 * CONFIGURATIONS`` candidates;
3. each candidate fitted on the training window, stopped early on the
   validation window, scored by ROC AUC on the validation window;
4. the highest validation ROC AUC wins (ties: the earlier candidate).

The test window is never read: the search receives a ``TrainingSet`` and
touches only its ``train`` and ``validation`` parts (a test scrambles the test
window and gets the same choice and scores). ``lab tune`` runs the search,
logs it to MLflow (a parent run, a child run per candidate) and writes the
result to ``Settings.tuned_config_path`` (``ml/tuned.json``, committed), which
``lab train`` uses and names on its run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.checksum import checksum
from core.errors import LabError
from core.settings import Settings
from ml import factories
from ml.data import DATE, TrainingSet, horizon_minutes, read_mart, split
from ml.evaluation import point_metrics

log = logging.getLogger(__name__)

SEED = 13
CONFIGURATIONS = 5  # hyperparameter settings; each is tried without and with month_of_year
SPACE: dict[str, list[Any]] = {
    "learning_rate": [0.03, 0.05, 0.1],
    "max_leaf_nodes": [15, 31, 63],
    "min_samples_leaf": [200, 1000, 3000],
    "l2_regularization": [0.0, 1.0, 10.0],
}
OPTIONAL_FEATURE = "month_of_year"
SELECTION = "highest validation ROC AUC; early stopping on validation log loss inside each fit"


@dataclass(frozen=True)
class Candidate:
    """One point of the search and what it scored on the validation window."""

    params: dict[str, Any]
    month_of_year: bool
    validation_roc_auc: float
    validation_log_loss: float
    n_iter: int
    fit_seconds: float


@dataclass
class Tuned:
    """The search's outcome: what ``lab train`` uses, and the evidence for it."""

    params: dict[str, Any]
    excluded_features: list[str]
    candidates: list[Candidate]
    windows: dict[str, str]
    budget: int
    seed: int
    selection: str = SELECTION
    mart: dict[str, Any] = field(default_factory=dict)  # rows, checksum and horizon of the mart searched
    run_id: str = ""  # the MLflow parent run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Tuned:
        raw = json.loads(text)
        raw["candidates"] = [Candidate(**c) for c in raw["candidates"]]
        return cls(**raw)


def configurations(budget: int = CONFIGURATIONS, seed: int = SEED) -> list[dict[str, Any]]:
    """The hyperparameter settings tried: the previous defaults, then seeded distinct draws from ``SPACE``.

    Raises:
        LabError: a budget larger than the grid (it would be cut short silently, yet recorded as asked).
    """
    first = {k: factories.BOOSTING_DEFAULTS[k] for k in factories.TUNABLE}
    grid = [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*SPACE.values())]
    if budget > len(grid):
        raise LabError(f"a budget of {budget} settings is more than the {len(grid)} the search space holds")
    rest = [g for g in grid if g != first]
    order = np.random.default_rng(seed).permutation(len(rest))
    return [first, *(rest[i] for i in order[: max(0, budget - 1)])]


def search(
    data: TrainingSet,
    budget: int = CONFIGURATIONS,
    seed: int = SEED,
    on_candidate: Callable[[Candidate], None] | None = None,
) -> Tuned:
    """Fit and score every candidate on the training and validation windows; return the best.

    Args:
        data: the training set; only its train and validation windows are read.
        budget: hyperparameter settings to try (twice each: without and with ``month_of_year``).
        seed: the draw of settings after the first.
        on_candidate: called after each candidate is scored (``lab tune`` logs it as a child run).
    """
    train, validation = data.train, data.validation  # the only rows this function reads
    candidates: list[Candidate] = []
    for params in configurations(budget, seed):
        for with_month in (False, True):
            chosen = data if with_month else data.without([OPTIONAL_FEATURE])
            x_train, y_train = chosen.xy(train)
            x_val, y_val = chosen.xy(validation)
            pipeline = factories.gradient_boosting(chosen.categorical, chosen.numeric, **params)
            started = time.perf_counter()
            factories.fit(pipeline, x_train, y_train, x_val, y_val)
            seconds = time.perf_counter() - started
            scores = point_metrics(y_val, factories.positive_proba(pipeline, x_val))
            candidate = Candidate(
                params=params,
                month_of_year=with_month and OPTIONAL_FEATURE in data.features,
                validation_roc_auc=scores["roc_auc"],
                validation_log_loss=scores["log_loss"],
                n_iter=int(pipeline.steps[-1][1].n_iter_),
                fit_seconds=round(seconds, 2),
            )
            log.info("candidate %s month_of_year=%s: validation ROC AUC %.4f", params, with_month, scores["roc_auc"])
            candidates.append(candidate)
            if on_candidate is not None:
                on_candidate(candidate)
    best = max(candidates, key=lambda c: c.validation_roc_auc)  # max keeps the first of equals
    windows = data.windows.params()
    return Tuned(
        params=dict(best.params),
        excluded_features=[] if best.month_of_year else [OPTIONAL_FEATURE],
        candidates=candidates,
        windows={k: v for k, v in windows.items() if not k.startswith("test")},
        budget=budget,
        seed=seed,
    )


def tune(settings: Settings, frame: pd.DataFrame | None = None, budget: int = CONFIGURATIONS) -> Tuned:
    """Run the search on the training mart, log it to MLflow and write ``settings.tuned_config_path``."""
    import mlflow

    from ml.tracking import use_experiment

    frame = read_mart(settings) if frame is None else frame
    data = split(frame, settings.validation_months, settings.test_months)
    experiment_id = use_experiment(settings)
    searched = frame[frame[DATE] <= data.windows.validation_end]
    mart = {"rows": len(searched), "checksum": checksum(searched), "prediction_horizon_minutes": horizon_minutes(frame)}

    children: list[str] = []

    def log_child(candidate: Candidate) -> None:
        name = f"candidate-{len(children) + 1}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, nested=True):
            mlflow.log_params({**candidate.params, "month_of_year": candidate.month_of_year})
            mlflow.log_metrics(
                {
                    "validation_roc_auc": candidate.validation_roc_auc,
                    "validation_log_loss": candidate.validation_log_loss,
                    "n_iter": candidate.n_iter,
                    "fit_seconds": candidate.fit_seconds,
                }
            )
        children.append(name)

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        mlflow.set_tag("lab.run_kind", "tuning")
        mlflow.log_params(
            {
                "budget": budget,
                "seed": SEED,
                "space": json.dumps(SPACE, sort_keys=True),
                "selection": SELECTION,
                "prediction_horizon_minutes": mart["prediction_horizon_minutes"],
                **{k: v for k, v in data.windows.params().items() if not k.startswith("test")},
            }
        )
        tuned = search(data, budget, SEED, on_candidate=log_child)
        tuned.mart, tuned.run_id = mart, run.info.run_id
        best = max(c.validation_roc_auc for c in tuned.candidates)
        mlflow.log_metric("best_validation_roc_auc", best)
        mlflow.log_params({f"chosen_{k}": v for k, v in tuned.params.items()})
        mlflow.log_param("chosen_excluded_features", ",".join(tuned.excluded_features) or "none")
        mlflow.log_text(tuned.to_json(), "tuned.json")
    path = Path(str(settings.tuned_config_path))
    path.write_text(tuned.to_json())
    log.info("tuned configuration written to %s", path)
    return tuned


def load_tuned(settings: Settings) -> tuple[Tuned, str]:
    """The tuned configuration ``lab train`` uses, and its file's sha256.

    Raises:
        LabError: no tuned configuration at ``settings.tuned_config_path``.
    """
    path = Path(str(settings.tuned_config_path))
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabError(f"no tuned configuration at {path} ({exc.strerror}); run `lab tune`") from None
    try:
        tuned = Tuned.from_json(text)
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"{path} is not a tuned configuration written by `lab tune` ({exc})") from None
    unknown = sorted(set(tuned.params) - set(factories.TUNABLE))
    if unknown:
        raise LabError(f"{path} sets parameters the search does not tune: {', '.join(unknown)}")
    return tuned, hashlib.sha256(text.encode()).hexdigest()
