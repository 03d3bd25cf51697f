"""Airflow on this home: ``lab airflow`` (standalone), ``lab airflow-test`` (one month), ``lab airflow-env``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from lab import output
from lab.context import settings_for


def airflow_command(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="Port of the Airflow UI (default: LAB_AIRFLOW_PORT).")] = None,
) -> None:
    """Start Airflow standalone with the project's DAGs on this home; Ctrl-C stops it."""
    import time

    from orchestration import airflow

    settings = settings_for(ctx)
    if port is not None:
        settings = settings.model_copy(update={"airflow_port": port})
    output.note(f"starting Airflow in {settings.airflow_home} (about a minute)")
    with airflow.standalone(settings) as url:
        output.show(f"Airflow UI   {url}")
        output.show(f"login        {airflow.ADMIN_USER} / {airflow.admin_password(settings)}")
        output.show(
            "DAGs         flights_monthly (ingest -> publish -> one task per dbt model -> marts asset)\n"
            "             train_and_promote (runs when the marts asset updates: train -> promote -> refresh API)\n"
            "backfill     airflow backfill create --dag-id flights_monthly "
            "--from-date 2013-01-01 --to-date 2013-03-01\n"
            "             (in another shell, after `eval $(lab airflow-env)`)"
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            output.note("stopping Airflow")


def airflow_test_command(
    ctx: typer.Context,
    month: Annotated[
        str, typer.Option("--month", "-m", help="The month (YYYY-MM) the pipeline run processes.")
    ] = "2013-12",
) -> None:
    """Run the month through Airflow (`airflow dags test` of both DAGs, every task executed) and show each task."""
    from core.months import month_index
    from ml.registry import latest_decision
    from orchestration import airflow

    settings = settings_for(ctx)
    month_index(month)
    with output.status("preparing Airflow (metadata DB)"):
        airflow.prepare(settings, register=False)
    runs: list[tuple[str, str | None]] = [("flights_monthly", f"{month}-01"), ("train_and_promote", None)]
    with output.status(f"airflow dags test flights_monthly {month}-01, then train_and_promote"):
        airflow.dags_test_in_turn(settings, runs)
    for dag_id, logical_date in runs:
        table = output.table("task", "state", "seconds", title=f"{dag_id} {logical_date or '(marts asset)'}")
        for row in airflow.task_runs(settings, dag_id):
            table.add_row(row["task_id"], row["state"], f"{_seconds(row):.1f}")
        output.show(table)
    output.show(latest_decision(settings))


def _seconds(task_run: dict[str, str]) -> float:
    """How long a task ran (0 when it has no start or end)."""
    start, end = task_run["start_date"], task_run["end_date"]
    if not (start and end):
        return 0
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def airflow_env_command(ctx: typer.Context) -> None:
    """Print `export` lines that point the `airflow` CLI at this home (use with eval)."""
    import shlex

    from orchestration import airflow

    for key, value in airflow.env(settings_for(ctx)).items():
        if key.startswith(("AIRFLOW", "LAB_")) or key == "PATH":
            output.plain(f"export {key}={shlex.quote(value)}")
