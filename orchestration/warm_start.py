"""Warm imports for the processes tasks are forked from: the scheduler (LocalExecutor) and Celery workers.

LocalExecutor forks its workers from the scheduler, and each task process from
a worker, so a module the scheduler imported once costs a task nothing. A
Celery worker (the full stack's executor) forks its pool from its main
process, and each task from a pool process: the same holds for what the
worker imported at start. A task
otherwise pays its imports in full, and on two cores while its neighbours pay
theirs (``bench/airflow.py --scheduler`` prints each step's time):

- every task parses its DAG file first, which imports Cosmos: 33 tasks in a
  watcher-mode month;
- a Cosmos task with ``InvocationMode.DBT_RUNNER`` imports dbt;
- ``train`` and ``promote`` import MLflow, scikit-learn and skops;
- ``ingest`` imports pyiceberg and pyarrow.

The DAG processor forks a process per DAG file it parses, so it gets the
modules the DAG files import. Airflow imports ``airflow_local_settings`` in
every component at start-up; ``orchestration.airflow.write_local_settings``
writes one that calls ``warm()``. Other components and CLI commands import
nothing extra. On macOS Airflow execs a fresh interpreter for each task (fork
alone is unsafe there), so the warm start saves nothing on that platform.
"""

from __future__ import annotations

import importlib
import sys

# What a DAG file imports while it is parsed (tasks, and the DAG processor).
DAG_PARSING = ("pendulum", "cosmos", "cosmos.operators.local", "cosmos.operators.watcher", "orchestration.dbt_group")
# What the tasks import while they run (the scheduler only).
TASKS = (
    "dbt.cli.main",
    "dbt.adapters.duckdb",
    "dbt.adapters.postgres",
    "duckdb",
    "ingestion.loader",
    "warehouse.publish",
    "ml.train",
    "ml.registry",
    "mlflow",
)


def warm() -> None:
    """Import what the forked processes of this component will need."""
    component = sys.argv[1:2]
    if component not in (["scheduler"], ["dag-processor"], ["celery"]):
        return
    for module in DAG_PARSING:
        importlib.import_module(module)
    if component in (["scheduler"], ["celery"]):  # `airflow celery worker`
        for module in TASKS:
            importlib.import_module(module)
        from orchestration.steps import import_skops_quietly

        import_skops_quietly()
