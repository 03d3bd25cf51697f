"""One monitoring pass: land the prediction log, build the monitoring models, decide, report.

The steps, each a function the ``monitor`` DAG runs as its own task and
``lab monitor`` runs in a row:

1. ``land_predictions``: the prediction log, exported and loaded into the lake
   like any source (one partition per month of scheduled departure; landing the
   same rows again changes nothing).
2. ``build``: publish the lake to the warehouse, write the reference of every
   model version the predictions name, and ``dbt build --select tag:monitoring``
   (for one month, or all).
3. ``read``: the monitoring marts as pandas, from one state of the warehouse.
4. ``decide`` (``monitoring.rules``) and ``report``: the HTML report, and a
   monitoring run in MLflow with every monthly figure stepped by month.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.months import month_index
from core.settings import Settings
from monitoring.rules import RetrainDecision

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PREDICTIONS_SOURCE = "predictions"
MARTS = ("mon_monthly_summary", "mon_performance", "mon_feature_drift", "mon_feature_bins")
# Stepped by month in the MLflow monitoring run.
LOGGED = ("roc_auc", "estimated_roc_auc", "label_coverage", "drifted_importance_share", "prediction_psi")


@dataclass(frozen=True)
class Monitored:
    """The monitoring marts after a build, as pandas frames (all months)."""

    summary: pd.DataFrame
    performance: pd.DataFrame
    drift: pd.DataFrame
    bins: pd.DataFrame

    def months(self, month: str | None) -> list[dict[str, Any]]:
        """The summary rows of one month (or all), in month order."""
        rows = self.summary if month is None else self.summary[self.summary["prediction_month"] == month]
        return rows.sort_values(["prediction_month", "model_version"]).to_dict("records")

    def judged(self, champion: str | None, month: str | None, min_predictions: int) -> list[dict[str, Any]]:
        """The rows the rules judge: the champion's, of ``month`` or else of its latest full month.

        A retired version's months never ask for retraining again, and an old
        month's decay is not today's: without ``month`` the question is whether
        the model serving now is fine in the latest month with at least
        ``min_predictions`` predictions. No champion: every version's rows.
        """
        rows = [r for r in self.months(month) if champion is None or r["model_version"] == champion]
        if month is None:
            full = [r for r in rows if r["predictions"] >= min_predictions]
            latest = max((r["prediction_month"] for r in full), default=None)
            rows = [r for r in full if r["prediction_month"] == latest]
        return rows


def land_predictions(settings: Settings, month: str | None = None) -> int:
    """Load the prediction log (one month of it, or all) into the lake; rows loaded."""
    from ingestion.declarations import load_declarations
    from ingestion.loader import ingest

    if month is not None:
        month_index(month)
    decl = load_declarations(settings.sources_dirs)[PREDICTIONS_SOURCE]
    return ingest(decl, settings, partition=month).rows_loaded


def publish_with_references(settings: Settings) -> list[str]:
    """Publish the lake and write the reference of every model version the predictions name; those versions."""
    from monitoring.references import write_references
    from warehouse.publish import publish
    from warehouse.query import query

    publish(settings)
    versions = query(settings, "select distinct model_version from raw.predictions").column(0).to_pylist()
    return write_references(settings, versions)


def build(settings: Settings, month: str | None = None) -> list[str]:
    """Publish, write the references, build the monitoring models (``tag:monitoring``); the versions monitored."""
    from warehouse.dbt import run_dbt

    versions = publish_with_references(settings)
    run_dbt(settings, ["build", "--select", "tag:monitoring"], month=month)
    return versions


def read(settings: Settings) -> Monitored:
    """The monitoring marts, read in one transaction."""
    from warehouse.dbt import model_relations
    from warehouse.query import query_all

    relations = model_relations(settings, "monitoring")
    tables = query_all(settings, {name: f"select * from {relations[name]}" for name in MARTS})
    frames = {name: table.to_pandas() for name, table in tables.items()}
    return Monitored(*(frames[name] for name in MARTS))


def report(settings: Settings, monitored: Monitored, decision: RetrainDecision, *, notes: list[str]) -> Path:
    """Write the HTML report and log it, with the monthly figures, as an MLflow monitoring run."""
    import mlflow

    from ml.tracking import use_experiment
    from monitoring.report import render_report

    assert settings.monitor_reports_dir is not None
    # The histograms show the latest month with enough predictions to mean something.
    enough = monitored.summary.loc[monitored.summary["predictions"] >= settings.monitor_min_predictions]
    months = set(enough["prediction_month"])
    path = render_report(
        monitored.performance,
        monitored.drift,
        monitored.bins[monitored.bins["prediction_month"].isin(months)],
        settings.monitor_reports_dir / "report.html",
        title=f"Monitoring: {settings.model_name}",
        notes=[f"retrain: {'yes' if decision.retrain else 'no'} ({decision.trigger}): {decision.reason}", *notes],
    )
    experiment_id = use_experiment(settings, settings.mlflow_monitoring_experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name="monitor"):
        mlflow.set_tags(
            {
                "lab.retrain": str(decision.retrain).lower(),
                "lab.retrain_trigger": decision.trigger,
                "lab.retrain_reason": decision.reason[:5000],
            }
        )
        for row in monitored.months(None):
            figures = {
                f"v{row['model_version']}_{name}": float(row[name])
                for name in LOGGED
                if row.get(name) is not None and row[name] == row[name]  # NaN: no figure that month (no labels)
            }
            mlflow.log_metrics(figures, step=month_index(row["prediction_month"]))  # one call per month
        mlflow.log_artifact(str(path), "monitoring")
    return path
