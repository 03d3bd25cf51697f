"""Train a challenger on the refreshed marts, gate it against the champion, tell the API.

Scheduled by the retrain policy (``LAB_RETRAIN_POLICY``): ``monthly`` runs it on
the marts asset every ``flights_monthly`` run marks; ``on_alert`` only on the
retrain-request asset the ``monitor`` DAG marks when a rule fires. Either way a
worse model is registered but never promoted (the registry's gate); the API
picks up a new champion by alias polling, or at once when
``LAB_SERVE_RELOAD_URL`` is set.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from core.names import WAREHOUSE_POOL
from core.settings import Settings
from orchestration.assets import CHAMPION, MARTS, RETRAIN_REQUEST

DEFAULT_ARGS = {"owner": "ml-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=20)}


@dag(
    dag_id="train_and_promote",
    schedule=[MARTS] if Settings().retrain_policy == "monthly" else [RETRAIN_REQUEST],
    start_date=pendulum.datetime(2013, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["ml", "mlflow"],
    doc_md=__doc__,
)
def train_and_promote() -> None:
    @task(pool=WAREHOUSE_POOL)
    def train() -> dict[str, Any]:
        from orchestration.steps import train_challenger

        return train_challenger(Settings())

    @task(pool=WAREHOUSE_POOL)
    def promote(trained: dict[str, Any]) -> dict[str, Any]:
        from orchestration.steps import promote_challenger

        return promote_challenger(Settings(), trained["version"])

    @task(outlets=[CHAMPION])
    def refresh_serving(decision: dict[str, Any]) -> dict[str, Any]:
        from orchestration.steps import refresh_serving as refresh

        return {"decision": decision, **refresh(Settings())}

    refresh_serving(promote(train()))


train_and_promote()
