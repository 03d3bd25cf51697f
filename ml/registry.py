"""Promotion: the challenger becomes champion only if it is measurably better, on rows neither has seen.

The window: the challenger's test window (read fresh from the mart), which
its fit never saw. The champion must not have seen it either: every run
records ``fit_end``, the last day whose rows shaped the model (training, and
validation when it stopped the boosting or fitted the calibration). When the
champion's ``fit_end`` reaches into the window there is no clean window to
compare on, and the gate says so and decides nothing ("undecided"): comparing
there would score the champion on its own training data.

The decision: both models score the same rows; the paired bootstrap
(``ml.evaluation.paired_auc_difference``: each resample scores both models on
the same resampled rows) gives a 95% interval of challenger ROC AUC minus
champion ROC AUC. The challenger is promoted only when the interval's lower
bound is above ``Settings.promotion_margin``: better by more than the margin
beyond sampling noise. An equal model (difference 0, interval [0, 0]) is not
promoted. The decision, the window, both scores and the interval are written
on the challenger's model version whichever way it goes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import LabError
from core.names import CHALLENGER, CHAMPION, TAG_PREFIX, TAG_PROMOTION_DECISION, TAG_PROMOTION_REASON
from core.settings import Settings
from ml import evaluation
from ml.artifacts import ModelRefused, load_model
from ml.data import LABEL, horizon_minutes, read_mart, window
from ml.evaluation import Estimate, paired_auc_difference, point_metrics
from ml.factories import positive_proba
from ml.tracking import configure_mlflow

log = logging.getLogger(__name__)

Outcome = Literal["promoted", "rejected", "undecided"]


@dataclass
class Decision:
    """What ``promote`` decided and why."""

    promoted: bool
    challenger_version: str
    champion_version: str | None  # the champion before the decision
    challenger_auc: float
    champion_auc: float | None
    margin: float
    reason: str
    outcome: Outcome = "rejected"
    window: tuple[date, date] | None = None  # the rows both were scored on (local flight dates)
    rows: int = 0
    difference: Estimate | None = None  # challenger AUC - champion AUC, paired bootstrap 95% interval


class _Undecided(Exception):
    """No clean comparison is possible; the message says why."""


def promote(settings: Settings, version: str | None = None, frame: pd.DataFrame | None = None) -> Decision:
    """Gate a model version (default: the challenger) against the current champion.

    Args:
        settings: the registry, the warehouse and the margin.
        version: the model version to gate (default: the ``challenger`` alias).
        frame: the training mart, if already read (else read when needed).
    """
    import mlflow

    configure_mlflow(settings, as_promoter=True)
    client = mlflow.MlflowClient()
    name = settings.model_name
    try:
        candidate = (
            client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, CHALLENGER)
        )
    except mlflow.exceptions.MlflowException:
        which = f"no version {version} of {name}" if version else f"no {CHALLENGER} of {name}: run `lab train` first"
        raise LabError(f"nothing to gate: {which}") from None
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None
    params = client.get_run(str(candidate.run_id)).data.params
    decision = Decision(
        promoted=False,
        challenger_version=str(candidate.version),
        champion_version=str(champion.version) if champion else None,
        challenger_auc=float("nan"),
        champion_auc=None,
        margin=settings.promotion_margin,
        reason="",
    )
    if champion is not None and str(champion.version) == decision.challenger_version:
        # Nothing to decide, and the champion's own recorded decision stays as it was.
        decision.reason = "already champion"
        return decision
    try:
        challenger_model = load_model(f"models:/{name}/{candidate.version}").pipeline
    except ModelRefused as refused:
        # Recorded like any rejection: the gate decided, nothing of the artifact ran.
        decision.reason = f"model refused: {refused}"
    else:
        try:
            _judge(settings, client, decision, challenger_model, params, champion, frame)
        except _Undecided as undecided:
            decision.outcome, decision.promoted, decision.reason = "undecided", False, str(undecided)
    if decision.promoted:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
    for key, value in _tags(decision).items():
        client.set_model_version_tag(name, candidate.version, key, value)
    log.info("promotion of v%s: %s (%s)", candidate.version, decision.outcome, decision.reason)
    return decision


def _judge(
    settings: Settings,
    client: Any,
    decision: Decision,
    challenger_model: Any,
    params: dict[str, str],
    champion: Any,
    frame: pd.DataFrame | None,
) -> None:
    """Fill ``decision`` for a challenger that loaded.

    Raises:
        _Undecided: no window both models are clean of, nothing to score on it, or
            a model whose features mean another horizon than the mart's.
    """
    start, end = _dates(params, ("test_start", "test_end"), f"v{decision.challenger_version}")
    decision.window = (start, end)
    rows = window(read_mart(settings) if frame is None else frame, start, end)
    decision.rows = len(rows)
    if rows.empty:
        raise _Undecided(f"the training mart holds no rows in the window {start}..{end}")
    _same_horizon(params, rows, f"v{decision.challenger_version}")
    y = rows[LABEL].to_numpy(dtype=int)
    if len(np.unique(y)) < 2:
        raise _Undecided(f"the window {start}..{end} holds flights of one outcome only: ROC AUC is undefined there")
    challenger_proba = positive_proba(challenger_model, rows[_features(params, rows, decision.challenger_version)])
    decision.challenger_auc = point_metrics(y, challenger_proba)["roc_auc"]
    if champion is None:
        decision.outcome, decision.promoted, decision.reason = "promoted", True, "no champion yet"
        return
    tuned_on = _tuned_window(params)
    if tuned_on is not None and tuned_on[0] <= end and start <= tuned_on[1]:
        raise _Undecided(
            f"no clean window: the tuning chose v{decision.challenger_version}'s configuration by its scores on"
            f" {tuned_on[0]}..{tuned_on[1]}, which overlaps the test window {start}..{end}"
        )
    champion_params = client.get_run(str(champion.run_id)).data.params
    _same_horizon(champion_params, rows, f"champion v{champion.version}")
    (champion_fit_end,) = _dates(champion_params, ("fit_end",), f"champion v{champion.version}")
    if champion_fit_end >= start:
        raise _Undecided(
            f"no clean window: champion v{champion.version} was fitted on rows through {champion_fit_end}, "
            f"inside the challenger's test window {start}..{end}; comparing there would score it on its own "
            "training data"
        )
    try:
        champion_model = load_model(f"models:/{settings.model_name}/{champion.version}").pipeline
    except ModelRefused as refused:
        # A champion that may not be loaded cannot be served either: any sound candidate replaces it.
        decision.outcome, decision.promoted = "promoted", True
        decision.reason = f"champion v{champion.version} refused ({refused})"
        return
    champion_proba = positive_proba(champion_model, rows[_features(champion_params, rows, str(champion.version))])
    decision.champion_auc = point_metrics(y, champion_proba)["roc_auc"]
    difference = paired_auc_difference(y, challenger_proba, champion_proba)
    decision.difference = difference
    decision.promoted = difference.lo > settings.promotion_margin
    decision.outcome = "promoted" if decision.promoted else "rejected"
    verdict = "above" if decision.promoted else "not above"
    decision.reason = (
        f"ROC AUC {decision.challenger_auc:.4f} vs champion v{champion.version} {decision.champion_auc:.4f} "
        f"on {start}..{end} ({len(rows):,} flights): difference {difference.value:+.4f}, 95% interval "
        f"[{difference.lo:+.4f}, {difference.hi:+.4f}], lower bound {verdict} the margin {settings.promotion_margin}"
    )


def _tuned_window(params: dict[str, str]) -> tuple[date, date] | None:
    """The validation window the tuning chose this model's configuration on, if it used one."""
    if params.get("tuned_config", "not used") == "not used":
        return None
    try:
        first, last = params["tuned_validation_window"].split("..")
        return date.fromisoformat(first), date.fromisoformat(last)
    except (KeyError, ValueError):
        return None  # a configuration written by hand names no window


def _same_horizon(params: dict[str, str], rows: pd.DataFrame, who: str) -> None:
    """A model is compared only on features computed as of the instant it learned them at."""
    mart = horizon_minutes(rows)
    learned = params.get("prediction_horizon_minutes", "none")
    if learned != ("none" if mart is None else str(mart)):
        raise _Undecided(
            f"{who} learned features as of {learned} min before departure; the mart's are as of {mart} min"
        )


def _dates(params: dict[str, str], keys: tuple[str, ...], who: str) -> list[date]:
    try:
        return [date.fromisoformat(params[key]) for key in keys]
    except (KeyError, ValueError):
        raise _Undecided(f"{who}'s run records no {'/'.join(keys)}: it predates the three-window training") from None


def _features(params: dict[str, str], rows: pd.DataFrame, version: str) -> list[str]:
    """The columns a model was trained on (its run's feature lists), all present in the mart."""
    features = [
        f for f in (params.get("categorical_features", "") + "," + params.get("numeric_features", "")).split(",") if f
    ]
    missing = [f for f in features if f not in rows.columns]
    if missing:
        raise _Undecided(f"v{version} needs features the training mart no longer has: {', '.join(missing)}")
    return features


def _tags(decision: Decision) -> dict[str, str]:
    def number(value: float | None) -> str:
        return "" if value is None or np.isnan(value) else f"{value:.6f}"

    difference = decision.difference
    return {
        TAG_PROMOTION_DECISION: decision.outcome,
        TAG_PROMOTION_REASON: decision.reason,
        "lab.promotion.window": "" if decision.window is None else f"{decision.window[0]}..{decision.window[1]}",
        "lab.promotion.rows": str(decision.rows),
        "lab.promotion.challenger_auc": number(decision.challenger_auc),
        "lab.promotion.champion_auc": number(decision.champion_auc),
        "lab.promotion.champion_version": decision.champion_version or "",
        "lab.promotion.auc_difference": number(difference.value if difference else None),
        "lab.promotion.auc_difference_lo": number(difference.lo if difference else None),
        "lab.promotion.auc_difference_hi": number(difference.hi if difference else None),
        "lab.promotion.bootstrap": f"{evaluation.REPLICATES} paired resamples, seed {evaluation.SEED}",
        "lab.promotion.margin": str(decision.margin),
    }


def champion_summary(settings: Settings) -> dict[str, object]:
    """Version, params, metrics and lineage of the current champion, and the decision that made it."""
    import mlflow

    configure_mlflow(settings)
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(settings.model_name, CHAMPION)
    except mlflow.exceptions.MlflowException as exc:
        raise LabError(f"{settings.model_name} has no champion yet; run `lab train` then `lab promote`") from exc
    run = client.get_run(str(version.run_id))
    return {
        "name": settings.model_name,
        "version": str(version.version),
        "run_id": version.run_id,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "promotion": {k: v for k, v in version.tags.items() if k.startswith("lab.promotion.")},
        "lineage": {k: v for k, v in run.data.tags.items() if k.startswith((TAG_PREFIX, "mlflow.source.git"))},
    }


def latest_decision(settings: Settings) -> str:
    """One line on what the promotion gate decided for the newest model version."""
    import mlflow

    configure_mlflow(settings)
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{settings.model_name}'")
    if not versions:
        return f"promotion gate: {settings.model_name} has no registered version yet"
    newest = max(versions, key=lambda v: int(v.version))
    tags = newest.tags
    window = tags.get("lab.promotion.window")
    return (
        f"promotion gate: v{newest.version} {tags.get(TAG_PROMOTION_DECISION, 'not gated yet')}"
        f"{f' on {window}' if window else ''} ({tags.get(TAG_PROMOTION_REASON, 'no decision recorded')})"
    )
