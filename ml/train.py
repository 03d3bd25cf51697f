"""Train on the training mart: fit on the train window, decide on validation, report on test, log to MLflow.

One call = one MLflow run. The model is fitted on the *train* window with the
configuration ``lab tune`` chose on the *validation* window (``ml/tuned.json``),
stops adding trees when its validation log loss stops improving, and is
Platt-scaled on the validation window when a check inside that window says its
probabilities need it. The *test* window is scored once, at the end, for the
reported metrics (each with a bootstrap 95% interval) and precision / recall
at the product's decision threshold; nothing is chosen on it.

The run records params (windows, horizon, the tuned configuration used, the
calibration decision), metrics (validation, test with intervals, the
baseline's), plots, the model with signature and input example, one dataset
per window (by checksum), the reference profile its monitoring will compare
later months with (``ml.profile``), and the lineage that says exactly which
data made the model. Every model is registered and becomes the ``challenger``;
promotion is a separate, gated step (``ml.registry``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from core.checksum import checksum
from core.errors import LabError
from core.months import month_index, month_start
from core.names import CHALLENGER, TAG_CHECKSUM_TRAIN, TAG_MODEL_URI, TAG_SNAPSHOT_PREFIX, TRAINING_MART
from core.settings import PROJECT_ROOT, Settings
from ml import evaluation, profile
from ml import model as factories
from ml.artifacts import TRUSTED_TYPES
from ml.data import DATE, LABEL, PARTS, Part, TrainingSet, Windows, horizon_minutes, read_mart, split
from ml.evaluation import Estimate, bootstrap_metrics, point_metrics
from ml.profile import reference_profile
from ml.tracking import use_experiment
from ml.tuning import load_tuned

log = logging.getLogger(__name__)

ModelKind = Literal["gbm", "baseline"]
# The baseline's permutation importance: a fixed sample of the validation window, shuffles per feature.
IMPORTANCE_ROWS = 3_000
IMPORTANCE_REPEATS = 2


@dataclass
class TrainResult:
    """The outcome of one training run."""

    run_id: str
    model_version: str
    metrics: dict[str, float]
    rows: int
    checksum: str
    windows: Windows | None = None
    horizon_minutes: int | None = None
    test: dict[str, Estimate] = field(default_factory=dict)  # the reported metrics with their intervals
    window_rows: dict[str, int] = field(default_factory=dict)
    calibrated: bool = False
    tuned_config: str = ""
    excluded_features: list[str] = field(default_factory=list)


def score(model: Pipeline, x: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC, log loss and Brier of ``model`` on (x, y), no intervals."""
    return point_metrics(y, factories.positive_proba(model, x))


def lineage_tags(settings: Settings) -> dict[str, str]:
    """Which data made this model: raw snapshots, dbt invocation, git commit."""
    from warehouse import snapshots
    from warehouse.dbt import manifest_path, target_dir

    tags: dict[str, str] = {"lab.dbt_target": settings.dbt_target}
    for table, snapshot_id in snapshots.recorded(settings).items():
        tags[f"{TAG_SNAPSHOT_PREFIX}{table}"] = str(snapshot_id)
    manifest = manifest_path(settings)
    if manifest.exists():
        tags["lab.dbt_manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
        tags["lab.dbt_invocation_id"] = json.loads(manifest.read_text())["metadata"]["invocation_id"]
    run_results = target_dir(settings) / "run_results.json"
    if run_results.exists():
        tags["lab.dbt_build_invocation_id"] = json.loads(run_results.read_text())["metadata"]["invocation_id"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        tags["mlflow.source.git.commit"] = commit
        tags["lab.git_dirty"] = str(bool(dirty)).lower()
    except (OSError, subprocess.CalledProcessError):
        tags["lab.git_dirty"] = "unknown"
    return tags


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


def _plots(
    importance: Importance,
    y_test: np.ndarray,
    proba_test: np.ndarray,
    uncalibrated_test: np.ndarray | None,
) -> dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figures: dict[str, object] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y_test, proba_test, ax=ax, name="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_title("ROC (test window)")
    figures["roc_curve.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(y_test, proba_test, ax=ax, name="model")
    ax.set_title("Precision-recall (test window)")
    figures["precision_recall.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y_test, proba_test, n_bins=15, ax=ax, name="served")
    if uncalibrated_test is not None:
        CalibrationDisplay.from_predictions(y_test, uncalibrated_test, n_bins=15, ax=ax, name="before Platt scaling")
    ax.set_title("Calibration (test window)")
    figures["calibration.png"] = fig
    order = np.argsort(importance.values)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(order))))
    ax.barh(np.array(importance.names)[order], importance.values[order], xerr=importance.spread_of(order))
    ax.set_xlabel(importance.measure)
    ax.set_title(importance.title)
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures


class _Stopwatch:
    """Seconds per stage of a run, logged with it (``seconds_<stage>``): where the time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


def train(
    settings: Settings, kind: ModelKind = "gbm", frame: pd.DataFrame | None = None, through: str | None = None
) -> TrainResult:
    """Train, evaluate, log and register one model; it becomes the challenger.

    Args:
        settings: warehouse and MLflow locations, windows, decision threshold.
        kind: ``gbm`` (the real model) or ``baseline`` (the simple one, registered alone).
        frame: the training mart, if already read (else read from the warehouse).
        through: 'YYYY-MM': use only flights up to the end of this month (local date), as
            if trained then; all three windows fall inside. Default: the whole mart.
    """
    import mlflow

    clock = _Stopwatch()
    frame = read_mart(settings) if frame is None else frame
    if through is not None:
        frame = frame[frame[DATE] < month_start(month_index(through) + 1)]
        if frame.empty:
            raise LabError(f"the training mart has no flights up to {through}")
    horizon = horizon_minutes(frame)
    full = split(frame, settings.validation_months, settings.test_months)
    tuned, tuned_sha256 = load_tuned(settings)
    data = full.without(tuned.excluded_features) if kind == "gbm" else full
    windows = data.windows
    parts = {part: data.part(part) for part in PARTS}
    x_train, y_train = data.xy(parts["train"])
    x_val, y_val = data.xy(parts["validation"])
    x_test, y_test = data.xy(parts["test"])
    experiment_id = use_experiment(settings)
    if kind == "gbm":
        pipeline = factories.gradient_boosting(data.categorical, data.numeric, **tuned.params)
    else:
        pipeline = factories.baseline(data.categorical, data.numeric)
    clock.lap("read")

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        factories.fit(pipeline, x_train, y_train, x_val, y_val)
        clock.lap("fit")
        boosted = factories.boosted(pipeline)
        with factories.predicting():  # from here on the model only predicts
            # Each window is scored once; every probability below is computed from these scores.
            raw_val, raw_test = factories.raw_score(pipeline, x_val), factories.raw_score(pipeline, x_test)
            check = factories.calibration_check(raw_val, y_val, parts["validation"][DATE].to_numpy())
            fitted = factories.platt_scaled(pipeline, x_val, y_val) if check.calibrate else pipeline
            # The last day whose rows shaped the model: validation too when it stopped the
            # boosting or fitted the calibration. The gate compares only on later days.
            fit_end = windows.validation_end if boosted is not None or check.calibrate else windows.train_end
            clock.lap("calibrate")

            proba_test = factories.proba_from_raw(fitted, raw_test)  # the test window, scored once
            test = bootstrap_metrics(y_test, proba_test)
            proba_val = factories.proba_from_raw(fitted, raw_val)
            metrics = {f"validation_{k}": v for k, v in point_metrics(y_val, proba_val).items()}
            for name, estimate in test.items():
                metrics |= {
                    f"test_{name}": estimate.value,
                    f"test_{name}_lo": estimate.lo,
                    f"test_{name}_hi": estimate.hi,
                }
            at = evaluation.at_threshold(y_test, proba_test, settings.decision_threshold)
            metrics |= {f"test_{k}_at_threshold": v for k, v in at.items()}
            if kind == "gbm":
                reference = factories.baseline(data.categorical, data.numeric).fit(x_train, y_train)
                metrics |= {f"baseline_test_{k}": v for k, v in score(reference, x_test, y_test).items()}
            metrics |= {
                "calibration_log_loss_as_is": check.log_loss_as_is,
                "calibration_log_loss_platt": check.log_loss_platt,
                **({"n_iter": float(boosted.n_iter_)} if boosted is not None else {}),
                **{f"label_rate_{part}": float(parts[part][LABEL].mean()) for part in PARTS},
            }
            clock.lap("evaluate")

            checksums = {part: checksum(parts[part]) for part in PARTS}
            estimator = boosted if boosted is not None else pipeline.steps[-1][1]
            mlflow.log_params(
                {
                    "model_kind": kind,
                    "seed": factories.SEED,
                    "training_mart": TRAINING_MART,
                    "prediction_horizon_minutes": "none" if horizon is None else horizon,
                    **windows.params(),
                    "fit_end": fit_end.isoformat(),
                    "trained_through": through or "all",
                    "categorical_features": ",".join(data.categorical),
                    "numeric_features": ",".join(data.numeric),
                    "excluded_features": ",".join(data.excluded) or "none",
                    # The baseline has nothing to tune; its run says so rather than naming the file.
                    "tuned_config": _shown_path(settings.tuned_config_path) if kind == "gbm" else "not used",
                    "tuned_config_sha256": tuned_sha256 if kind == "gbm" else "not used",
                    "tuned_run_id": tuned.run_id or "none",
                    "tuned_validation_window": _tuned_window(tuned.windows),
                    "calibration": "platt" if check.calibrate else "none",
                    "calibration_fitted_until": check.fitted_until.isoformat(),
                    "decision_threshold": settings.decision_threshold,
                    "bootstrap_replicates": evaluation.REPLICATES,
                    "bootstrap_seed": evaluation.SEED,
                    **{f"model__{k}": v for k, v in estimator.get_params().items() if _loggable(v)},
                }
            )
            mlflow.log_metrics(metrics)
            mlflow.set_tags(
                {
                    **lineage_tags(settings),
                    **{f"lab.rows_{part}": str(len(parts[part])) for part in PARTS},
                    TAG_CHECKSUM_TRAIN: checksums["train"],
                    "lab.checksum_validation": checksums["validation"],
                    "lab.checksum_test": checksums["test"],
                    "lab.checksum_mart": _combined(checksums.values()),
                    # The tuning chose on its validation window; a test window overlapping it is not clean.
                    "lab.test_window_untuned": str(_untouched_by_tuning(windows, tuned.windows)).lower(),
                }
            )
            _log_datasets(settings, data, parts, checksums)
            # The fixed bins this version's monitoring will compare later months with.
            importance = feature_importance(pipeline, data)
            shape = reference_profile(x_train, data.categorical, data.numeric, proba_val, importance.shares())
            mlflow.log_dict(shape, profile.ARTIFACT)
            clock.lap("record")

            uncalibrated = factories.proba_from_raw(pipeline, raw_test) if check.calibrate else None
            _log_plots(importance, y_test, proba_test, uncalibrated)
            clock.lap("plots")
            info = _log_model(settings, fitted, x_test.head(5), proba_test[:5])
            clock.lap("log_model")
        mlflow.log_metrics({f"seconds_{stage}": seconds for stage, seconds in clock.seconds.items()})
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    client.set_model_version_tag(settings.model_name, version, "lab.model_kind", kind)
    client.set_model_version_tag(settings.model_name, version, "lab.test_roc_auc", f"{test['roc_auc'].value:.6f}")
    log.info("registered %s version %s (run %s)", settings.model_name, version, run.info.run_id)
    return TrainResult(
        run.info.run_id,
        version,
        {**metrics, **{f"seconds_{stage}": seconds for stage, seconds in clock.seconds.items()}},
        len(data.frame),
        checksums["train"],
        windows=windows,
        horizon_minutes=horizon,
        test=test,
        window_rows={part: len(parts[part]) for part in PARTS},
        calibrated=check.calibrate,
        tuned_config=_shown_path(settings.tuned_config_path) if kind == "gbm" else "",
        excluded_features=data.excluded,
    )


def _log_plots(
    importance: Importance, y_test: np.ndarray, proba_test: np.ndarray, uncalibrated: np.ndarray | None
) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    for name, figure in _plots(importance, y_test, proba_test, uncalibrated).items():
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)  # type: ignore[arg-type]


def _log_model(settings: Settings, pipeline: Pipeline, example: pd.DataFrame, example_proba: np.ndarray) -> Any:
    """Log and register ``pipeline`` (skops) with its signature and input example; MLflow's ``ModelInfo``."""
    import mlflow
    from mlflow.models import infer_signature

    with _mlflow_checks_its_own_write():
        return mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, example_proba),
            input_example=example,
            registered_model_name=settings.model_name,
            pyfunc_predict_fn="predict_proba",
            # skops, never pickle: loading (ml/artifacts.py) trusts exactly these types.
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            # Named outright: inferring them makes MLflow shell out to uv and pip, for seconds.
            pip_requirements=_requirements(),
        )


def _combined(checksums: Iterable[str]) -> str:
    """The checksum of the windows' rows together: the mart's, since the windows partition it.

    ``core.checksum`` is ``<sum of row hashes mod 2**64>-<column-names hash>-<rows>``,
    so the parts' sums add up (saves hashing the mart twice).
    """
    parts = [c.split("-") for c in checksums]
    (columns,) = {p[1] for p in parts}
    total = sum(int(p[0], 16) for p in parts) % 2**64
    return f"{total:016x}-{columns}-{sum(int(p[2]) for p in parts)}"


def _tuned_window(tuned_windows: dict[str, str]) -> str:
    return f"{tuned_windows.get('validation_start', '?')}..{tuned_windows.get('validation_end', '?')}"


def _untouched_by_tuning(windows: Windows, tuned_windows: dict[str, str]) -> bool:
    """True when this run's test window lies wholly after the validation window the tuning chose on."""
    end = tuned_windows.get("validation_end")
    return end is not None and windows.test_start.isoformat() > end


def _log_datasets(
    settings: Settings, data: TrainingSet, parts: dict[Part, pd.DataFrame], checksums: dict[Part, str]
) -> None:
    """One MLflow dataset per window, identified by its checksum; the schema from a few rows.

    MLflow's ``from_pandas`` profiles and type-checks every value of the frame
    it is given (seconds per window); the checksum identifies the rows exactly.
    """
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    schema = infer_signature(data.frame[[*data.features, LABEL]].head(100)).inputs
    for part, rows in parts.items():
        start, end = data.windows.bounds(part)
        source = CodeDatasetSource(
            {"lab.training_mart": TRAINING_MART, "lab.dbt_target": settings.dbt_target, "lab.rows": str(len(rows))}
        )
        dataset = MetaDataset(  # type: ignore[abstract]  # MLflow's own metadata-only dataset; profile is optional
            source, name=f"{part} {start}..{end}", digest=checksums[part][:36], schema=schema
        )
        mlflow.log_input(dataset, context=part)


def _shown_path(path: object) -> str:
    """A path as the run records it: relative to the project when inside it."""
    from pathlib import Path

    resolved = Path(str(path)).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(resolved)


@contextmanager
def _mlflow_checks_its_own_write() -> Iterator[None]:
    """Let MLflow load back, once, the model this process has just written.

    Logging a model with an input example makes MLflow load the saved model to
    check that the example scores; with its deserialisation off (as
    ``configure_mlflow`` leaves every lab process) that check fails with a
    warning. The bytes are the ones this process wrote a moment ago, not an
    artifact from the registry; every other load goes through ``ml.artifacts``.
    """
    key = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(key)
    os.environ[key] = "true"
    try:
        yield
    finally:
        os.environ[key] = before if before is not None else "false"


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "pandas", "numpy", "scipy", "mlflow", "skops")]


def _loggable(value: object) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None
