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
promotion is a separate, gated step (``ml.registry``). The MLflow record is
written by a process of its own while this one computes (``ml.recorder``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from core.checksum import checksum
from core.errors import LabError
from core.months import month_index, month_start
from core.names import TAG_CHECKSUM_TRAIN, TAG_SNAPSHOT_PREFIX, TRAINING_MART
from core.settings import PROJECT_ROOT, Settings
from core.stopwatch import Stopwatch, as_metrics
from ml import evaluation, factories, profile
from ml.data import DATE, LABEL, PARTS, Part, TrainingSet, Windows, horizon_minutes, read_mart, split
from ml.evaluation import Estimate, bootstrap_metrics, point_metrics
from ml.factories import CalibrationCheck
from ml.importance import Importance, feature_importance
from ml.profile import reference_profile
from ml.recorder import Dataset, ModelToLog, Recorder, RunRecord
from ml.tuning import Tuned, load_tuned

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


@dataclass
class _Prepared:
    """The "read" lap: the windows cut from the mart and the unfitted pipeline."""

    data: TrainingSet
    parts: dict[Part, pd.DataFrame]
    horizon: int | None
    tuned: Tuned
    tuned_sha256: str
    pipeline: Pipeline

    def xy(self, part: Part) -> tuple[pd.DataFrame, np.ndarray]:
        return self.data.xy(self.parts[part])


@dataclass
class _Calibrated:
    """The "calibrate" lap: the final model and each window's scores, computed once."""

    fitted: Pipeline
    check: CalibrationCheck
    raw_val: np.ndarray
    raw_test: np.ndarray
    proba_test: np.ndarray
    fit_end: date
    importance: Importance


@dataclass
class _Evaluated:
    """The "evaluate" lap: test metrics with intervals, validation and baseline metrics."""

    test: dict[str, Estimate]
    metrics: dict[str, float]
    proba_val: np.ndarray


def train(
    settings: Settings,
    kind: ModelKind = "gbm",
    frame: pd.DataFrame | None = None,
    through: str | None = None,
    recorder: Recorder | None = None,
) -> TrainResult:
    """Train, evaluate, log and register one model; it becomes the challenger.

    Args:
        settings: warehouse and MLflow locations, windows, decision threshold.
        kind: ``gbm`` (the real model) or ``baseline`` (the simple one, registered alone).
        frame: the training mart, if already read (else read from the warehouse).
        through: 'YYYY-MM': use only flights up to the end of this month (local date), as
            if trained then; all three windows fall inside. Default: the whole mart.
        recorder: the run's recorder, if the caller started one (``lab train`` forks its
            own); else a new one is spawned. This call ends it either way.
    """
    started_ms, run_name = int(time.time() * 1000), f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    clock = Stopwatch()
    # The MLflow record is written by a process of its own (``ml.recorder``), beside this one.
    with recorder if recorder is not None else Recorder(settings) as recorder:
        prepared = _prepare(settings, kind, frame, through)
        clock.lap("read")
        # What needs no model (checksums, lineage), done while the recorder imports MLflow,
        # before the fit takes both cores.
        checksums = {part: checksum(prepared.parts[part]) for part in PARTS}
        lineage = lineage_tags(settings)
        clock.lap("lineage")

        factories.fit(prepared.pipeline, *prepared.xy("train"), *prepared.xy("validation"))
        clock.lap("fit")
        with factories.predicting():  # from here on the model only predicts
            calibrated = _calibrate(prepared)
            clock.lap("calibrate")
            # The model is final: the recorder logs and registers it, and draws the plots, meanwhile.
            recorder.log_model(_model_to_log(run_name, started_ms, prepared, calibrated))
            evaluated = _evaluate(settings, kind, prepared, calibrated)
            clock.lap("evaluate")
            record = _run_record(settings, kind, through, prepared, calibrated, evaluated, checksums, lineage)
            clock.lap("record")
        record.metrics |= as_metrics(clock.seconds)
        recorded = recorder.finish(record)
    clock.lap("wait")  # for the recorder, after this process's own work
    log.info("registered %s version %s (run %s)", settings.model_name, recorded.model_version, recorded.run_id)
    data = prepared.data
    return TrainResult(
        recorded.run_id,
        recorded.model_version,
        {**evaluated.metrics, **as_metrics({**clock.seconds, **recorded.seconds})},
        len(data.frame),
        checksums["train"],
        windows=data.windows,
        horizon_minutes=prepared.horizon,
        test=evaluated.test,
        window_rows={part: len(prepared.parts[part]) for part in PARTS},
        calibrated=calibrated.check.calibrate,
        tuned_config=_shown_path(settings.tuned_config_path) if kind == "gbm" else "",
        excluded_features=data.excluded,
    )


def _prepare(settings: Settings, kind: ModelKind, frame: pd.DataFrame | None, through: str | None) -> _Prepared:
    """The mart (read unless given), cut at ``through``, split into windows; the unfitted pipeline."""
    frame = read_mart(settings) if frame is None else frame
    if through is not None:
        frame = frame[frame[DATE] < month_start(month_index(through) + 1)]
        if frame.empty:
            raise LabError(f"the training mart has no flights up to {through}")
    horizon = horizon_minutes(frame)
    full = split(frame, settings.validation_months, settings.test_months)
    tuned, tuned_sha256 = load_tuned(settings)
    data = full.without(tuned.excluded_features) if kind == "gbm" else full
    if kind == "gbm":
        pipeline = factories.gradient_boosting(data.categorical, data.numeric, **tuned.params)
    else:
        pipeline = factories.baseline(data.categorical, data.numeric)
    parts = {part: data.part(part) for part in PARTS}
    return _Prepared(data, parts, horizon, tuned, tuned_sha256, pipeline)


def _calibrate(prepared: _Prepared) -> _Calibrated:
    """Score validation and test once; Platt-scale on validation when its check says so."""
    pipeline, windows = prepared.pipeline, prepared.data.windows
    (x_val, y_val), (x_test, _) = prepared.xy("validation"), prepared.xy("test")
    # Each window is scored once; every probability below is computed from these scores.
    raw_val, raw_test = factories.raw_score(pipeline, x_val), factories.raw_score(pipeline, x_test)
    check = factories.calibration_check(raw_val, y_val, prepared.parts["validation"][DATE].to_numpy())
    fitted = factories.platt_scaled(pipeline, raw_val, y_val) if check.calibrate else pipeline
    # The last day whose rows shaped the model: validation too when it stopped the
    # boosting or fitted the calibration. The gate compares only on later days.
    boosted = factories.boosted(pipeline) is not None
    fit_end = windows.validation_end if boosted or check.calibrate else windows.train_end
    proba_test = factories.proba_from_raw(fitted, raw_test)  # the test window, scored once
    importance = feature_importance(pipeline, prepared.data)
    return _Calibrated(fitted, check, raw_val, raw_test, proba_test, fit_end, importance)


def _model_to_log(run_name: str, started_ms: int, prepared: _Prepared, calibrated: _Calibrated) -> ModelToLog:
    """What the recorder needs to log the model and draw its plots."""
    x_test, y_test = prepared.xy("test")
    uncalibrated = (
        factories.proba_from_raw(prepared.pipeline, calibrated.raw_test) if calibrated.check.calibrate else None
    )
    return ModelToLog(
        run_name,
        started_ms,
        calibrated.fitted,
        x_test.head(5),
        calibrated.proba_test[:5],
        calibrated.importance,
        y_test,
        calibrated.proba_test,
        uncalibrated,
    )


def _evaluate(settings: Settings, kind: ModelKind, prepared: _Prepared, calibrated: _Calibrated) -> _Evaluated:
    """Test metrics with bootstrap intervals, validation metrics, the baseline's test metrics."""
    data, check = prepared.data, calibrated.check
    (x_train, y_train), (_, y_val), (x_test, y_test) = (prepared.xy(part) for part in PARTS)
    # The baseline is fitted while the recorder logs the model: before the fit, it would
    # only delay the fit's start.
    reference = factories.baseline(data.categorical, data.numeric).fit(x_train, y_train) if kind == "gbm" else None
    test = bootstrap_metrics(y_test, calibrated.proba_test)
    proba_val = factories.proba_from_raw(calibrated.fitted, calibrated.raw_val)
    metrics = {f"validation_{k}": v for k, v in point_metrics(y_val, proba_val).items()}
    for name, estimate in test.items():
        metrics |= {f"test_{name}": estimate.value, f"test_{name}_lo": estimate.lo, f"test_{name}_hi": estimate.hi}
    at = evaluation.at_threshold(y_test, calibrated.proba_test, settings.decision_threshold)
    metrics |= {f"test_{k}_at_threshold": v for k, v in at.items()}
    if reference is not None:
        metrics |= {f"baseline_test_{k}": v for k, v in score(reference, x_test, y_test).items()}
    boosted = factories.boosted(prepared.pipeline)
    metrics |= {
        "calibration_log_loss_as_is": check.log_loss_as_is,
        "calibration_log_loss_platt": check.log_loss_platt,
        **({"n_iter": float(boosted.n_iter_)} if boosted is not None else {}),
        **{f"label_rate_{part}": float(prepared.parts[part][LABEL].mean()) for part in PARTS},
    }
    return _Evaluated(test, metrics, proba_val)


def _run_record(
    settings: Settings,
    kind: ModelKind,
    through: str | None,
    prepared: _Prepared,
    calibrated: _Calibrated,
    evaluated: _Evaluated,
    checksums: dict[Part, str],
    lineage: dict[str, str],
) -> RunRecord:
    """The run's params, metrics, tags, datasets and reference profile, for the recorder to write."""
    data, tuned, parts, windows = prepared.data, prepared.tuned, prepared.parts, prepared.data.windows
    boosted = factories.boosted(prepared.pipeline)
    estimator = boosted if boosted is not None else prepared.pipeline.steps[-1][1]
    params = {
        "model_kind": kind,
        "seed": factories.SEED,
        "training_mart": TRAINING_MART,
        "prediction_horizon_minutes": "none" if prepared.horizon is None else prepared.horizon,
        **windows.params(),
        "fit_end": calibrated.fit_end.isoformat(),
        "trained_through": through or "all",
        "categorical_features": ",".join(data.categorical),
        "numeric_features": ",".join(data.numeric),
        "excluded_features": ",".join(data.excluded) or "none",
        # The baseline has nothing to tune; its run says so rather than naming the file.
        "tuned_config": _shown_path(settings.tuned_config_path) if kind == "gbm" else "not used",
        "tuned_config_sha256": prepared.tuned_sha256 if kind == "gbm" else "not used",
        "tuned_run_id": tuned.run_id or "none",
        "tuned_validation_window": _tuned_window(tuned.windows),
        "calibration": "platt" if calibrated.check.calibrate else "none",
        "calibration_fitted_until": calibrated.check.fitted_until.isoformat(),
        "decision_threshold": settings.decision_threshold,
        "bootstrap_replicates": evaluation.REPLICATES,
        "bootstrap_seed": evaluation.SEED,
        **{f"model__{k}": v for k, v in estimator.get_params().items() if _loggable(v)},
    }
    tags = {
        **lineage,
        **{f"lab.rows_{part}": str(len(parts[part])) for part in PARTS},
        TAG_CHECKSUM_TRAIN: checksums["train"],
        "lab.checksum_validation": checksums["validation"],
        "lab.checksum_test": checksums["test"],
        "lab.checksum_mart": _combined(checksums.values()),
        # The tuning chose on its validation window; a test window overlapping it is not clean.
        "lab.test_window_untuned": str(_untouched_by_tuning(windows, tuned.windows)).lower(),
    }
    datasets = [
        Dataset(part, "{} {}..{}".format(part, *windows.bounds(part)), checksums[part][:36], len(parts[part]))
        for part in PARTS
    ]
    # The fixed bins this version's monitoring will compare later months with.
    x_train = prepared.xy("train")[0]
    shape = reference_profile(
        x_train, data.categorical, data.numeric, evaluated.proba_val, calibrated.importance.shares()
    )
    return RunRecord(
        params,
        dict(evaluated.metrics),
        tags,
        datasets,
        data.frame[[*data.features, LABEL]].head(100),
        shape,
        profile.ARTIFACT,
        {"lab.model_kind": kind, "lab.test_roc_auc": f"{evaluated.test['roc_auc'].value:.6f}"},
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


def _shown_path(path: object) -> str:
    """A path as the run records it: relative to the project when inside it."""
    from pathlib import Path

    resolved = Path(str(path)).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(resolved)


def _loggable(value: object) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None
