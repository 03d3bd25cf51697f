"""Train on the training mart, evaluate on held-out months, log everything to MLflow.

One call = one MLflow run: params, metrics (and the baseline's), plots, the
model with signature and input example, the training and evaluation datasets,
and the lineage that says exactly which data made the model. Every model is
registered and becomes the ``challenger``; promotion is a separate, gated step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline

from core.checksum import checksum
from core.names import CHALLENGER, TAG_CHECKSUM_TRAIN, TAG_MODEL_URI, TAG_SNAPSHOT_PREFIX, TRAINING_MART
from core.settings import PROJECT_ROOT, Settings
from ml import model as factories
from ml.artifacts import TRUSTED_TYPES
from ml.data import LABEL, TrainingSet, read_mart, split
from ml.tracking import configure_mlflow

log = logging.getLogger(__name__)

ModelKind = Literal["gbm", "baseline"]


@dataclass
class TrainResult:
    """The outcome of one training run."""

    run_id: str
    model_version: str
    metrics: dict[str, float]
    rows: int
    checksum: str


def score(model: Pipeline, x: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """The held-out metrics every model is judged by."""
    proba = model.predict_proba(x)[:, 1]
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "log_loss": float(log_loss(y, proba)),
        "brier": float(brier_score_loss(y, proba)),
    }


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


def _plots(model: Pipeline, data: TrainingSet) -> dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import CalibrationDisplay
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    x, y = data.xy(data.eval)
    proba = model.predict_proba(x)[:, 1]
    figures: dict[str, object] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y, proba, ax=ax, name="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    figures["roc_curve.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(y, proba, ax=ax, name="model")
    figures["precision_recall.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y, proba, n_bins=15, ax=ax, name="model")
    figures["calibration.png"] = fig
    # Permutation importance on a fixed sample of the held-out months: model-agnostic
    # and measured where it matters, on data the model has not seen.
    sample = data.eval.sample(n=min(10_000, len(data.eval)), random_state=factories.SEED)
    xs, ys = data.xy(sample)
    result = permutation_importance(
        model, xs, ys, scoring="roc_auc", n_repeats=2, random_state=factories.SEED, n_jobs=1
    )
    order = np.argsort(result.importances_mean)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(order))))
    ax.barh(np.array(data.features)[order], result.importances_mean[order], xerr=result.importances_std[order])
    ax.set_xlabel("drop in ROC AUC when shuffled")
    ax.set_title("Permutation importance (held-out months)")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures


def train(settings: Settings, kind: ModelKind = "gbm", frame: pd.DataFrame | None = None) -> TrainResult:
    """Train, evaluate, log and register one model; it becomes the challenger.

    Args:
        settings: warehouse and MLflow locations.
        kind: ``gbm`` (the real model) or ``baseline`` (the simple one, registered alone).
        frame: the training mart, if already read (else read from the warehouse).
    """
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    frame = read_mart(settings) if frame is None else frame
    data = split(frame, settings.eval_months)
    x_train, y_train = data.xy(data.train)
    x_eval, y_eval = data.xy(data.eval)
    experiment_id = configure_mlflow(settings)
    make = factories.gradient_boosting if kind == "gbm" else factories.baseline
    pipeline = make(data.categorical, data.numeric)
    reference = factories.baseline(data.categorical, data.numeric)

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}") as run:
        started = time.perf_counter()
        pipeline.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - started
        metrics = score(pipeline, x_eval, y_eval)
        if kind == "gbm":
            reference.fit(x_train, y_train)
            metrics.update({f"baseline_{k}": v for k, v in score(reference, x_eval, y_eval).items()})
        metrics["fit_seconds"] = fit_seconds
        metrics["label_rate_train"] = float(y_train.mean())
        metrics["label_rate_eval"] = float(y_eval.mean())

        train_checksum = checksum(data.train)
        mlflow.log_params(
            {
                "model_kind": kind,
                "seed": factories.SEED,
                "training_mart": TRAINING_MART,
                "eval_start": data.eval_start.isoformat(),
                "eval_end": data.eval_end.isoformat(),
                "categorical_features": ",".join(data.categorical),
                "numeric_features": ",".join(data.numeric),
                **{f"model__{k}": v for k, v in pipeline.named_steps["model"].get_params().items() if _loggable(v)},
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.set_tags(
            {
                **lineage_tags(settings),
                "lab.rows_train": str(len(data.train)),
                "lab.rows_eval": str(len(data.eval)),
                TAG_CHECKSUM_TRAIN: train_checksum,
                "lab.checksum_eval": checksum(data.eval),
                "lab.checksum_mart": checksum(data.frame),
            }
        )
        with warnings.catch_warnings():
            # MLflow hints that integer columns cannot hold missing values; the
            # datasets' only one, month_of_year, never is missing.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
            mlflow.log_input(from_pandas(data.train, name="training", targets=LABEL), context="training")
            mlflow.log_input(from_pandas(data.eval, name="evaluation", targets=LABEL), context="evaluation")
        for name, figure in _plots(pipeline, data).items():
            mlflow.log_figure(figure, f"plots/{name}")
            plt.close(figure)  # type: ignore[arg-type]
        example = x_eval.head(5)
        with _mlflow_checks_its_own_write():
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=infer_signature(example, pipeline.predict_proba(example)[:, 1]),
                input_example=example,
                registered_model_name=settings.model_name,
                pyfunc_predict_fn="predict_proba",
                # skops, never pickle: loading (ml/artifacts.py) trusts exactly these types.
                serialization_format="skops",
                skops_trusted_types=TRUSTED_TYPES,
                # Named outright: inferring them makes MLflow shell out to uv and pip, for seconds.
                pip_requirements=_requirements(),
            )
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    client.set_model_version_tag(settings.model_name, version, "lab.model_kind", kind)
    client.set_model_version_tag(settings.model_name, version, "lab.roc_auc", f"{metrics['roc_auc']:.6f}")
    log.info("registered %s version %s (run %s)", settings.model_name, version, run.info.run_id)
    return TrainResult(run.info.run_id, version, metrics, len(data.frame), train_checksum)


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
