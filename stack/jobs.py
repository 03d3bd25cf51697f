"""Work sent to a running stack: a backfill through its scheduler, and what its task instances record.

The backfill is Airflow's own (`airflow backfill create`, run as the `lab`
tools service); the running scheduler queues its tasks on Redis and the Celery
workers run them. What happened is read back from Airflow's metadata database
as its own role: each task instance's state, try and host (a worker names
itself ``worker-N@<host>``, see ``stack/hostname.py``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from core.errors import LabError
from stack.lifecycle import run_service
from stack.runtime import Stack


@dataclass(frozen=True)
class TaskRun:
    run_id: str
    task_id: str
    state: str | None
    hostname: str
    try_number: int


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def query(stack: Stack, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows of a query on Airflow's metadata database, as its own role."""
    import psycopg

    url = stack.pg_url("airflow", stack.databases()["airflow"])
    with psycopg.connect(url, connect_timeout=5) as conn:
        return list(conn.execute(sql, params).fetchall())


def backfill_runs(stack: Stack, dag_id: str) -> dict[str, str]:
    """run_id -> state of every backfill run of the DAG."""
    rows = query(stack, "select run_id, state from dag_run where dag_id = %s and run_type = 'backfill'", dag_id)
    return {str(run_id): str(state) for run_id, state in rows}


def task_runs(stack: Stack, dag_id: str) -> list[TaskRun]:
    rows = query(
        stack,
        "select run_id, task_id, state, coalesce(hostname, ''), try_number from task_instance "
        "where dag_id = %s order by start_date nulls last",
        dag_id,
    )
    return [
        TaskRun(str(run), str(task), None if state is None else str(state), str(host), int(str(tries)))
        for run, task, state, host, tries in rows
    ]


def start_backfill(stack: Stack, dag_id: str, first: date, last: date) -> None:
    """Unpause the DAG and create the backfill; the scheduler takes it from there."""
    run_service(stack, "lab", [_airflow(), "dags", "unpause", dag_id], quiet=True)
    run_service(
        stack,
        "lab",
        [
            _airflow(),
            *("backfill", "create", "--dag-id", dag_id),
            *("--from-date", first.isoformat(), "--to-date", last.isoformat()),
            *("--max-active-runs", "1", "--reprocess-behavior", "none"),
        ],
        quiet=True,
    )


def wait_for_backfill(stack: Stack, dag_id: str, months: int, timeout: float = 1800.0) -> dict[str, str]:
    """Block until ``months`` backfill runs have finished; fail on the first failed one."""
    deadline = time.monotonic() + timeout
    while True:
        runs = backfill_runs(stack, dag_id)
        failed = sorted(run for run, state in runs.items() if state == "failed")
        if failed:
            raise LabError(f"{dag_id} run {failed[0]} failed: see `lab stack logs airflow-worker`")
        if sum(state == "success" for state in runs.values()) >= months:
            return runs
        if time.monotonic() > deadline:
            raise LabError(f"{dag_id}: {runs} after {timeout:.0f} s")
        time.sleep(3)
