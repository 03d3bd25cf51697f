"""Several DAG runs through ``dag.test()`` in one Airflow process: ``python -m orchestration.dags_test``.

``airflow dags test`` runs one DAG per process, and each process pays Airflow's
imports and the DAG folder's parse (Cosmos renders the dbt graph) before its
first task: seconds per DAG. ``lab airflow-test`` runs the month and then the
training DAG; here both run one after the other in one process, each exactly
as ``airflow dags test`` runs it (``dag.test()``, every task executed in
order). A failed run stops the rest and exits non-zero.

Usage: ``python -m orchestration.dags_test <dag_id>[@<logical date>] ...``
(run with ``orchestration.airflow.env``, as every Airflow command is).
"""

from __future__ import annotations

import sys


def run(dag_id: str, logical_date: str | None) -> str:
    """One DAG run, as ``airflow dags test <dag_id> [<logical date>]`` makes it; its final state."""
    from airflow.sdk import timezone
    from airflow.utils.cli import get_bagged_dag

    dag = get_bagged_dag(None, dag_id)  # parses the DAG folder and records the DAG, as `dags test` does
    when = timezone.parse(logical_date) if logical_date else timezone.utcnow()
    return str(dag.test(logical_date=when).state)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    from airflow.providers_manager import ProvidersManager

    # What every `airflow` command does first: the providers' configuration (Cosmos's [cosmos]).
    ProvidersManager().initialize_providers_configuration()
    for spec in argv:
        dag_id, _, logical_date = spec.partition("@")
        state = run(dag_id, logical_date or None)
        print(f"{dag_id}: {state}", flush=True)
        if state != "success":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
