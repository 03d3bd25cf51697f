"""Orchestration overhead: one month through Airflow + Cosmos against `lab` doing the same steps.

Prints, in one run on this machine, for the month 2013-03 on a lake that
already holds January and February with marts built through February (the
state a monthly run finds):

- ``lab`` directly: ``lab ingest --partition 2013-03``, ``lab build --month
  2013-03``, ``lab train``, ``lab promote`` (each a fresh process, as a user
  types them; ``lab build`` also checks source freshness and counts marts);
- Airflow: ``airflow dags test flights_monthly 2013-03-01`` (ingest, publish,
  one Cosmos task per dbt model, marts asset) then ``airflow dags test
  train_and_promote`` (train, promote, refresh), each task really executed;
- optionally (``--scheduler``) the same month as a *scheduled* run under
  ``airflow standalone`` (LocalExecutor: a process per task), in each of Cosmos's watcher
  and local modes (``orchestration/dbt_group.py``), timed from
  the monthly run's start to the training run's end by Airflow's own run
  records, and also from this script's trigger CLI to its polling seeing both
  runs succeed; then where that span went, step by step (the wait before each
  step is scheduling: the scheduler noticing, queueing, forking the task).

Both start from copies of the same home. Goal: Airflow <= 1.5x of ``lab``.

Run: ``.venv/bin/python bench/airflow.py [--scheduler]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.processes import free_port  # noqa: E402
from core.settings import Settings  # noqa: E402
from orchestration import airflow as af  # noqa: E402
from orchestration.steps import ingest_month, publish_lake  # noqa: E402
from warehouse.dbt import run_dbt  # noqa: E402

MONTH = "2013-03"


def starting_home(workdir: Path, name: str, **overrides: str) -> Settings:
    """January and February in the lake, marts built through February.

    Built afresh for each contender (a copied home would still point at the
    original's files: Iceberg metadata and MLflow artifacts hold absolute paths).
    """
    settings = Settings(home=workdir / name / ".lab", sources_dirs=[], airflow_port=free_port(), **overrides)  # type: ignore[arg-type]
    for month in ("2013-01", "2013-02"):
        ingest_month(settings, month)
    publish_lake(settings)
    run_dbt(settings, ["build"])
    return settings


def timed(label: str, fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"  {label:<52} {elapsed:7.1f} s", flush=True)
    return elapsed


def lab_directly(settings: Settings) -> float:
    env = {**os.environ, **settings.to_env()}
    lab = str(Path(sys.executable).with_name("lab"))

    def run(*args: str) -> None:
        subprocess.run([lab, *args], env=env, check=True, capture_output=True)

    print("lab, step by step:")
    return sum(
        [
            timed(f"lab ingest --partition {MONTH}", lambda: run("ingest", "--partition", MONTH)),
            timed(f"lab build --month {MONTH}", lambda: run("build", "--month", MONTH)),
            timed("lab train", lambda: run("train")),
            timed("lab promote", lambda: run("promote")),
        ]
    )


def airflow_dags_test(settings: Settings) -> float:
    af.prepare(settings)  # one-time set-up (metadata DB, pool, DAG registration), not timed
    print("Airflow, `airflow dags test` (every task executed, no scheduler):")
    return sum(
        [
            timed(
                f"dags test flights_monthly {MONTH}-01",
                lambda: af.dags_test(settings, "flights_monthly", f"{MONTH}-01"),
            ),
            timed("dags test train_and_promote", lambda: af.dags_test(settings, "train_and_promote")),
        ]
    )


def airflow_scheduled(settings: Settings) -> tuple[float, float]:
    """(the runs' own span, trigger-to-done wall time including the CLI and polling).

    The span runs from ``flights_monthly`` starting to ``train_and_promote``
    ending, read from Airflow's run records: what a run the scheduler starts on
    its own costs. The wall time adds this script's ``airflow dags trigger``
    (a CLI process) and its 5 s polling.
    """
    print(
        f"Airflow, scheduled run under `airflow standalone` (LocalExecutor), Cosmos {settings.airflow_dbt_mode} mode:"
    )
    with af.standalone(settings):
        af.airflow(settings, "dags", "unpause", "flights_monthly", retry_locked=True)
        af.airflow(settings, "dags", "unpause", "train_and_promote", retry_locked=True)

        runs: dict[str, dict[str, str]] = {}

        def month_and_training() -> None:
            af.airflow(
                settings,
                "dags",
                "trigger",
                "flights_monthly",
                "--logical-date",
                f"{MONTH}-01T00:00:00+00:00",
                retry_locked=True,
            )
            runs["first"] = af.wait_for_runs(settings, "flights_monthly", 1)[0]
            runs["last"] = af.wait_for_runs(settings, "train_and_promote", 1)[0]  # started by the marts asset

        wall = timed("trigger -> flights_monthly -> asset -> train_and_promote", month_and_training)
        first, last = runs["first"], runs["last"]
        tasks = af.task_runs(settings, "flights_monthly") + af.task_runs(settings, "train_and_promote")
    span = (datetime.fromisoformat(last["end_date"]) - datetime.fromisoformat(first["start_date"])).total_seconds()
    print(f"  {'run start -> training run end (run records)':<52} {span:7.1f} s")
    print_breakdown(tasks, datetime.fromisoformat(first["start_date"]))
    return span, wall


def print_breakdown(tasks: list[dict[str, str]], run_start: datetime) -> None:
    """Where the span went: each step's start (and the wait before it) and its run time.

    The dbt group's per-model tasks (watcher: reporting; local: one build each)
    are one line; the watcher producer, the one ``dbt build``, is its own.
    """

    def at(row: dict[str, str], key: str) -> float:
        return (datetime.fromisoformat(row[key]) - run_start).total_seconds()

    def grouped(task_id: str) -> bool:
        return task_id.startswith("dbt.") and task_id != "dbt.dbt_producer_watcher"

    steps = [(r["task_id"], at(r, "start_date"), at(r, "end_date")) for r in tasks if not grouped(r["task_id"])]
    models = [r for r in tasks if grouped(r["task_id"])]
    if models:
        name = f"dbt model tasks ({len(models)})"
        steps.append((name, min(at(r, "start_date") for r in models), max(at(r, "end_date") for r in models)))
    previous_end = 0.0
    for name, start, end in sorted(steps, key=lambda step: step[1]):
        print(f"    {name:<34} starts {start:6.1f} s (+{start - previous_end:4.1f} wait)  runs {end - start:5.1f} s")
        previous_end = max(previous_end, end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", action="store_true", help="also time a scheduled run under standalone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-airflow-") as tmp:
        workdir = Path(tmp)
        print("each contender starts from a lake with 2013-01..02 and marts built through February", flush=True)
        direct = lab_directly(starting_home(workdir, "direct"))
        tested = airflow_dags_test(starting_home(workdir, "dags-test"))
        scheduled = (
            {
                mode: airflow_scheduled(starting_home(workdir, f"scheduled-{mode}", airflow_dbt_mode=mode))
                for mode in ("watcher", "local")
            }
            if args.scheduler
            else {}
        )
    print()
    print(f"{'one month, ingest -> dbt -> train -> promote':<52} {'wall s':>7} {'ratio':>7}")
    print(f"{'lab directly':<52} {direct:7.1f} {1.0:6.2f}x")
    print(f"{'airflow dags test (Cosmos, one task per model)':<52} {tested:7.1f} {tested / direct:6.2f}x")
    for mode, (span, wall) in scheduled.items():
        print(f"{f'airflow scheduled run, Cosmos {mode} mode':<52} {span:7.1f} {span / direct:6.2f}x")
        print(f"{'  same, incl. trigger CLI and 5 s polling':<52} {wall:7.1f} {wall / direct:6.2f}x")
    print("goal: Airflow <= 1.5x of lab")


if __name__ == "__main__":
    main()
