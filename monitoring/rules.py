"""The retrain rules: whether this month's monitoring asks for a new model, and why, in one sentence.

Performance decay is the primary trigger: the live ROC AUC of a version, once
enough flights of the month have outcomes (``monitor_min_labelled``), below the
lower end of its own test-window 95% interval. Drift alone fires only when the
drifting inputs carry at least ``monitor_drift_importance_share`` of the
model's feature importance: the seasons move the weather every month, and a
model that leans little on weather should not retrain for that. Both flags are
computed in ``mon_monthly_summary`` (dbt); this module words the decision.

Whatever fires, retraining goes through the same promotion gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.settings import Settings

Trigger = Literal["performance", "drift", "none"]


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    trigger: Trigger
    reason: str
    months: tuple[str, ...]  # the months that fired (empty when none did)


def _pct(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.0%}"


def _auc(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def month_verdict(row: dict[str, Any], settings: Settings) -> tuple[Trigger, str]:
    """One month and version of ``mon_monthly_summary``: what fired, in words."""
    where = f"{row['prediction_month']} v{row['model_version']}"
    drift = (
        f"drifting inputs carry {_pct(row['drifted_importance_share'])} of the model's importance "
        f"({row['drifted_features'] or 0} of {row['monitored_features'] or 0} features; "
        f"threshold {settings.monitor_drift_importance_share:.0%})"
    )
    if row["performance_decayed"]:
        return "performance", (
            f"{where}: live ROC AUC {_auc(row['roc_auc'])} on {row['labelled']:,} labelled flights is below "
            f"the lower end of its test interval, {_auc(row['reference_roc_auc_lo'])}"
        )
    if row["drift_alert"]:
        return "drift", f"{where}: {drift}"
    if row["predictions"] < settings.monitor_min_predictions:
        drift += f", but only {row['predictions']:,} predictions (< {settings.monitor_min_predictions:,})"
    if row["labelled"] < settings.monitor_min_labelled:
        performance = (
            f"{row['labelled']:,} labelled flights (< {settings.monitor_min_labelled:,}): "
            "performance cannot alert yet, "
            f"estimated ROC AUC {_auc(row['estimated_roc_auc'])}"
        )
    else:
        performance = (
            f"live ROC AUC {_auc(row['roc_auc'])} not below its test interval's {_auc(row['reference_roc_auc_lo'])}"
        )
    return "none", f"{where}: {performance}; {drift}"


def decide(rows: list[dict[str, Any]], settings: Settings) -> RetrainDecision:
    """Retrain when any of ``rows`` fired (``Monitored.judged`` picks them); performance decay named first."""
    verdicts = [(row["prediction_month"], *month_verdict(row, settings)) for row in rows]
    for trigger in ("performance", "drift"):
        fired = [(month, reason) for month, t, reason in verdicts if t == trigger]
        if fired:
            return RetrainDecision(True, trigger, fired[0][1], tuple(sorted({m for m, _ in fired})))
    if not verdicts:
        return RetrainDecision(False, "none", "no month of the serving model to judge yet", ())
    return RetrainDecision(False, "none", f"no rule fired; latest: {verdicts[-1][2]}", ())
