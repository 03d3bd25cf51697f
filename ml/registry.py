"""Promotion: the challenger becomes champion only if it is measurably better.

Both models are scored on the *same* evaluation window (the challenger's
held-out months, read fresh from the mart), so a model trained on an easier
window cannot win by luck of the calendar. The decision and both scores are
written on the challenger's model version, whichever way it goes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from core.errors import LabError
from core.names import CHALLENGER, CHAMPION, TAG_PREFIX, TAG_PROMOTION_DECISION, TAG_PROMOTION_REASON
from core.settings import Settings
from ml.artifacts import ModelRefused, load_model
from ml.data import read_mart, split, window
from ml.tracking import configure_mlflow
from ml.train import score

log = logging.getLogger(__name__)


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


def promote(settings: Settings, version: str | None = None, frame: pd.DataFrame | None = None) -> Decision:
    """Gate a model version (default: the challenger) against the current champion."""
    import mlflow

    configure_mlflow(settings)
    client = mlflow.MlflowClient()
    name = settings.model_name
    candidate = (
        client.get_model_version(name, version) if version else client.get_model_version_by_alias(name, CHALLENGER)
    )
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champion = None

    run = client.get_run(str(candidate.run_id))
    frame = read_mart(settings) if frame is None else frame
    held_out = window(
        frame, date.fromisoformat(run.data.params["eval_start"]), date.fromisoformat(run.data.params["eval_end"])
    )
    data = split(frame, settings.eval_months)
    x, y = data.xy(held_out)
    champion_auc: float | None = None
    try:
        candidate_auc = score(load_model(f"models:/{name}/{candidate.version}").pipeline, x, y)["roc_auc"]
    except ModelRefused as refused:
        # Recorded like any rejection: the gate decided, nothing of the artifact ran.
        candidate_auc, promoted, reason = float("nan"), False, f"model refused: {refused}"
    else:
        promoted, reason, champion_auc = _judge(settings, candidate.version, candidate_auc, champion, x, y)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
    tags = {
        TAG_PROMOTION_DECISION: "promoted" if promoted else "rejected",
        TAG_PROMOTION_REASON: reason,
        "lab.promotion.eval_window": f"{run.data.params['eval_start']}..{run.data.params['eval_end']}",
        "lab.promotion.challenger_auc": f"{candidate_auc:.6f}",
        "lab.promotion.champion_auc": "" if champion_auc is None else f"{champion_auc:.6f}",
        "lab.promotion.champion_version": champion.version if champion else "",
        "lab.promotion.margin": str(settings.promotion_margin),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, candidate.version, key, value)
    log.info("promotion of v%s: %s", candidate.version, reason)
    return Decision(
        promoted=promoted,
        challenger_version=str(candidate.version),
        champion_version=str(champion.version) if champion else None,
        challenger_auc=candidate_auc,
        champion_auc=champion_auc,
        margin=settings.promotion_margin,
        reason=reason,
    )


def _judge(
    settings: Settings, version: str, candidate_auc: float, champion: Any, x: pd.DataFrame, y: Any
) -> tuple[bool, str, float | None]:
    """(promote?, why, the champion's score) for a candidate that loaded and scored."""
    if champion is None:
        return True, "no champion yet", None
    if champion.version == version:
        return False, "already champion", candidate_auc
    try:
        champion_model = load_model(f"models:/{settings.model_name}/{champion.version}").pipeline
    except ModelRefused as refused:
        # A champion that may not be loaded cannot be served either: any sound candidate replaces it.
        return True, f"champion v{champion.version} refused ({refused})", None
    champion_auc = score(champion_model, x, y)["roc_auc"]
    promoted = candidate_auc >= champion_auc + settings.promotion_margin
    verdict = "beats" if promoted else "does not beat"
    reason = (
        f"ROC AUC {candidate_auc:.4f} {verdict} champion v{champion.version} "
        f"{champion_auc:.4f} + margin {settings.promotion_margin}"
    )
    return promoted, reason, champion_auc


def champion_summary(settings: Settings) -> dict[str, object]:
    """Version, metrics and lineage of the current champion."""
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
        "metrics": dict(run.data.metrics),
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
    return (
        f"promotion gate: v{newest.version} {tags.get(TAG_PROMOTION_DECISION, 'undecided')}"
        f" ({tags.get(TAG_PROMOTION_REASON, 'no decision recorded')})"
    )
