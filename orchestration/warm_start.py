"""Warm imports for the scheduler, inherited by every task process LocalExecutor forks.

LocalExecutor forks its workers from the scheduler, and each task process from
a worker. A Cosmos task with ``InvocationMode.DBT_RUNNER`` spends ~2.5 s of its
~5 s importing dbt (measured in task logs), 19 times a month. Importing dbt
once in the scheduler makes that import free in every task it runs.

Airflow imports ``airflow_local_settings`` in every component at start-up;
``orchestration.airflow.prepare`` writes one that calls ``warm()``.
"""

from __future__ import annotations

import sys


def warm() -> None:
    """In the scheduler process only: import what dbt tasks need."""
    if sys.argv[1:2] != ["scheduler"]:
        return
    import dbt.adapters.duckdb
    import dbt.cli.main  # noqa: F401
    import duckdb  # noqa: F401
