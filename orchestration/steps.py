"""The pipeline's non-dbt steps, each a function of (settings, month) returning a small summary.

Every step is safe to re-run: ingestion overwrites the month's partition (and
upserts the keyed tables), publishing replaces views or raw copies, training
registers a new challenger, and promotion is the registry's gate. Summaries are
plain dicts so Airflow can keep them as XComs.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)


def ingest_month(settings: Settings, month: str) -> dict[str, Any]:
    """Load one month of every partitioned source, and every keyed source whole."""
    from core.months import month_index
    from ingestion.declarations import load_declarations
    from ingestion.loader import ingest

    month_index(month)  # a malformed month fails here, before anything is written
    loaded: dict[str, Any] = {}
    for decl in load_declarations(settings.sources_dirs).values():
        result = ingest(decl, settings, partition=month if decl.partition is not None else None)
        loaded[decl.name] = {
            "rows_loaded": result.rows_loaded,
            "rows_quarantined": result.rows_quarantined,
            "snapshot_id": str(result.snapshot_id),
        }
        log.info(
            "%s %s: %s rows, snapshot %s", decl.name, result.partition or "all", result.rows_loaded, result.snapshot_id
        )
    return loaded


def publish_lake(settings: Settings) -> dict[str, Any]:
    """Point the warehouse's raw relations at the lake's current snapshots."""
    from warehouse.publish import publish

    return {table.name: {"snapshot_id": str(table.snapshot_id), "rows": table.rows} for table in publish(settings)}


def import_skops_quietly() -> None:
    """Import skops.io with Airflow's deprecated-import warnings off.

    At import, skops looks up the module of every scipy ufunc by scanning all of
    ``sys.modules`` (pickle's ``whichmodule``). Inside a task that includes
    Airflow's deprecated-module shims, which answer each lookup with a
    DeprecatedImportWarning: over a thousand lines in every ML task's log.
    Imported here with those warnings off, the log holds only what the task
    says (``tests/orchestration/test_airflow.py`` checks the scheduler's
    warm start for that warning).
    """
    import sys
    import warnings

    shims = sys.modules.get("airflow.utils.deprecation_tools")  # absent outside Airflow
    with warnings.catch_warnings():
        if shims is not None:
            warnings.simplefilter("ignore", shims.DeprecatedImportWarning)
        import skops.io  # noqa: F401


def train_challenger(settings: Settings) -> dict[str, Any]:
    """Train on the training mart, log the MLflow run, register the challenger."""
    from ml.train import train

    import_skops_quietly()

    result = train(settings, "gbm")
    return {"run_id": result.run_id, "version": result.model_version, "metrics": result.metrics}


def promote_challenger(settings: Settings, version: str) -> dict[str, Any]:
    """The promotion gate: champion only if better by the configured margin."""
    from ml.registry import promote

    import_skops_quietly()  # the gate loads both models
    decision = promote(settings, version)
    interval = decision.difference
    return {
        "outcome": decision.outcome,
        "promoted": decision.promoted,
        "challenger_version": decision.challenger_version,
        "champion_version": decision.champion_version,
        # XCom is JSON: a model the gate never scored has no AUC, not NaN.
        "challenger_auc": None if math.isnan(decision.challenger_auc) else decision.challenger_auc,
        "champion_auc": decision.champion_auc,
        "window": None if decision.window is None else [day.isoformat() for day in decision.window],
        "rows": decision.rows,
        "auc_difference": None if interval is None else [interval.value, interval.lo, interval.hi],
        "reason": decision.reason,
    }


def refresh_serving(settings: Settings) -> dict[str, Any]:
    """Ask a running API to load the current champion and the last published online features now.

    Without ``LAB_SERVE_RELOAD_URL`` nothing is called: the API follows the
    champion alias on its own every ``LAB_SERVE_POLL_SECONDS``.
    """
    if not settings.serve_reload_url:
        return {"reloaded": False, "reason": "no LAB_SERVE_RELOAD_URL; the API polls the champion alias"}
    import httpx

    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    response = httpx.post(settings.serve_reload_url, headers={"X-Admin-Token": token}, timeout=60)
    response.raise_for_status()
    return {"reloaded": True, **response.json()}


def mart_row_counts(settings: Settings) -> dict[str, int]:
    """Rows in every mart after a build (what the marts asset event carries)."""
    from warehouse.dbt import mart_relations
    from warehouse.query import row_counts

    return row_counts(settings, mart_relations(settings))


def dbt_results_dir(settings: Settings, run_id: str) -> Path:
    """Where a DAG run keeps the ``run_results.json`` of each of its dbt invocations, one file per task."""
    from warehouse.dbt import target_dir

    return target_dir(settings) / "airflow_runs" / re.sub(r"[^A-Za-z0-9._-]", "_", run_id)


def keep_dbt_results(project_dir: str, context: Any = None, **_: Any) -> None:
    """Cosmos callback after every dbt invocation: keep its ``run_results.json`` for the run's publish step.

    Cosmos runs dbt in a temporary copy of the project and deletes it with the
    results; these are the evidence ``publish_online_features`` checks. Kept
    per task, so a retried task's last attempt is what counts.
    """
    import shutil

    source = Path(project_dir) / "target" / "run_results.json"
    if context is None or not source.exists():
        return
    folder = dbt_results_dir(Settings(), str(context["run_id"]))
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{context['ti'].task_id}.partial"
    shutil.copyfile(source, staged)
    staged.replace(folder / f"{context['ti'].task_id}.json")


def publish_online_features(settings: Settings, run_id: str) -> dict[str, Any]:
    """Publish the online features from the marts this DAG run built, if its dbt results are all green.

    The task that calls this runs only after every dbt task succeeded; the
    results Cosmos's callback kept (``keep_dbt_results``) must say so too, or
    nothing is published and the API keeps the features it has.
    """
    import shutil

    from warehouse.online import publish_features

    folder = dbt_results_dir(settings, run_id)
    publication = publish_features(settings, sorted(folder.glob("*.json")))
    for other in folder.parent.iterdir():  # earlier runs' evidence has served its purpose
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)
    return {"version": publication.version, "written": publication.written, "rows": publication.rows}


def land_predictions(settings: Settings) -> dict[str, Any]:
    """The whole prediction log into the lake (landing the same rows again changes nothing)."""
    from monitoring.monitor import land_predictions as land

    return {"rows": land(settings)}


def build_references(settings: Settings) -> dict[str, Any]:
    """Publish the lake and write the reference of every model version the predictions name."""
    from monitoring.monitor import publish_with_references

    return {"versions": publish_with_references(settings)}


def monitoring_decision(settings: Settings) -> dict[str, Any]:
    """Read the monitoring marts, decide on retraining, write the report and the MLflow monitoring run."""
    from monitoring.monitor import read, report
    from monitoring.references import champion_version
    from monitoring.rules import decide

    monitored = read(settings)
    rows = monitored.judged(champion_version(settings), None, settings.monitor_min_predictions)
    decision = decide(rows, settings)
    path = report(settings, monitored, decision, notes=["written by the monitor DAG"])
    return {
        "retrain": decision.retrain,
        "trigger": decision.trigger,
        "reason": decision.reason,
        "months": list(decision.months),
        "report": str(path),
    }
