"""Monitor the served model: build the dbt monitoring models, report, and request retraining when a rule fires.

Scheduled on the predictions asset that ``land_predictions`` marks. The
monitoring models are the Cosmos group of ``tag:monitoring`` (every month: an
asset-triggered run has no month of its own). The decision task marks the
retrain-request asset only when a rule fired; otherwise it is skipped and the
asset is left alone, so ``train_and_promote`` (under the ``on_alert`` policy)
does not run.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from core.names import WAREHOUSE_POOL
from core.settings import Settings
from orchestration.assets import PREDICTIONS, RETRAIN_REQUEST
from orchestration.dbt_group import dbt_task_group

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=20)}


@dag(
    dag_id="monitor",
    schedule=[PREDICTIONS],
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["monitoring", "dbt", "mlflow"],
    doc_md=__doc__,
)
def monitor() -> None:
    @task(pool=WAREHOUSE_POOL)
    def references() -> dict[str, Any]:
        from orchestration.steps import build_references

        return build_references(Settings())

    @task(pool=WAREHOUSE_POOL)
    def report() -> dict[str, Any]:
        from orchestration.steps import monitoring_decision

        return monitoring_decision(Settings())

    @task(outlets=[RETRAIN_REQUEST])
    def request_retraining(decision: dict[str, Any]) -> dict[str, Any]:
        """Mark the retrain-request asset, or skip (leaving it unmarked) when no rule fired."""
        from airflow.exceptions import AirflowSkipException

        if not decision["retrain"]:
            raise AirflowSkipException(f"no retraining: {decision['reason']}")
        return decision

    decision = report()
    references() >> dbt_task_group(Settings(), "monitoring", select=["tag:monitoring"], month=None) >> decision
    request_retraining(decision)


monitor()
