"""Land the API's prediction log in the lake every day, and mark the predictions asset for ``monitor``.

Landing is idempotent: the same rows land as the same file, once, and a
month's partition is replaced as a whole.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from core.settings import Settings
from orchestration.assets import PREDICTIONS


@dag(
    dag_id="land_predictions",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=20)},
    tags=["lake", "monitoring"],
    doc_md=__doc__,
)
def land_predictions() -> None:
    @task(outlets=[PREDICTIONS])
    def land() -> dict[str, Any]:
        from orchestration.steps import land_predictions as land_log

        return land_log(Settings())

    land()


land_predictions()
