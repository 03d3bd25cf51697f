"""Running Airflow itself on this home: its configuration, CLI, and standalone server.

Everything Airflow needs comes from the settings (:func:`env`): where its home,
metadata database and DAGs are, and every LAB_* setting the tasks read. The CLI
(``lab airflow``), the tests and ``bench/airflow.py`` all go through here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import LabError
from core.files import write_private
from core.names import WAREHOUSE_POOL
from core.processes import stop, wait_until_answering
from core.settings import Settings

ADMIN_USER = "admin"

log = logging.getLogger(__name__)

# SQLite (the embedded metadata database; Airflow runs it in WAL mode) fails a
# write with "database is locked" after the busy timeout, and at once -- no
# timeout applies -- when the writer's transaction read a snapshot the scheduler
# has since written over. Airflow rolls such a command back (a backfill deletes
# its partial rows "so the user can retry"), so a command marked safe to repeat
# is run again.
SQLITE_LOCKED = "database is locked"
LOCKED_ATTEMPTS = 4


def env(settings: Settings) -> dict[str, str]:
    """Every Airflow process's environment for this home: Airflow's configuration and every LAB_* setting."""
    home = settings.airflow_home
    assert home is not None  # filled in by the settings' validator
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        # `airflow standalone` starts its components as `airflow ...` from PATH.
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        **settings.to_env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.airflow_dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": settings.airflow_database_url,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{settings.airflow_port}",
        # Cosmos reports usage to Astronomer unless told not to.
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        # Cosmos caches dbt artifacts per DAG; per home, not in a /tmp shared by every home.
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos"),
        "DO_NOT_TRACK": "1",
        "SCARF_ANALYTICS": "false",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        # The simple auth manager writes a generated password here on first start.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
    }


def passwords_file(settings: Settings) -> Path:
    assert settings.airflow_home is not None
    return settings.airflow_home / "simple_auth_manager_passwords.json"


def _executable() -> str:
    """The `airflow` entry point of the environment `lab` runs in."""
    return str(Path(sys.executable).with_name("airflow"))


def airflow(
    settings: Settings, *args: str, check: bool = True, timeout: float | None = None, retry_locked: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow <args>`` for this home; raise with Airflow's last lines when it fails.

    ``retry_locked``: the command is safe to repeat; run it again when it lost
    a write race on the SQLite metadata database (see SQLITE_LOCKED).
    """
    for attempt in range(1, LOCKED_ATTEMPTS + 1):
        proc = subprocess.run(
            [_executable(), *args], env=env(settings), capture_output=True, text=True, check=False, timeout=timeout
        )
        if not (retry_locked and proc.returncode != 0 and SQLITE_LOCKED in proc.stdout + proc.stderr):
            break
        if attempt < LOCKED_ATTEMPTS:
            log.warning("`airflow %s` lost a write race on the metadata database; again (%d)", args[0], attempt + 1)
            time.sleep(attempt)
    if check and proc.returncode != 0:
        raise _failed(f"airflow {' '.join(args)}", proc)
    return proc


def _failed(command: str, proc: subprocess.CompletedProcess[str]) -> LabError:
    """The error for a failed Airflow process: the command, its exit code and its last lines."""
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return LabError(f"`{command}` failed (exit {proc.returncode}):\n{tail}")


def _json(proc: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    """The JSON table an ``--output json`` command printed (Airflow may log warnings before it)."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("[", "{"))]
    return json.loads(lines[-1]) if lines else []


def prepare(settings: Settings, *, register: bool = True) -> None:
    """Create or upgrade the metadata DB, the one-slot warehouse pool, and register the DAGs.

    ``register=False`` is for ``airflow dags test`` alone: it parses the DAG files
    itself (failing on their import errors) and runs one task at a time without
    asking a pool, so a test run skips three Airflow processes.
    """
    from warehouse.dbt import ensure_manifest

    assert settings.airflow_home is not None
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    if settings.airflow_admin_password is not None:
        password = settings.airflow_admin_password.get_secret_value()
        write_private(passwords_file(settings), json.dumps({ADMIN_USER: password}))
    elif not passwords_file(settings).exists():
        # Airflow fills an empty file with the password it generates, keeping its mode.
        write_private(passwords_file(settings), "")
    ensure_manifest(settings)  # the DAG files render the dbt graph from it
    write_local_settings(settings)
    airflow(settings, "db", "migrate")
    if not register:
        return
    # DuckDB admits one writing process: every task that opens the file queues here (the
    # scheduler's queue; `dags test` runs one task at a time and asks no pool).
    slots = "1" if settings.dbt_target == "duckdb" else "4"
    airflow(settings, "pools", "set", WAREHOUSE_POOL, slots, "tasks that open the warehouse")
    airflow(settings, "dags", "reserialize")
    errors = _json(airflow(settings, "dags", "list-import-errors", "--output", "json"))
    if errors:
        raise LabError(f"DAG import errors: {errors}")


def write_local_settings(settings: Settings) -> None:
    """The ``airflow_local_settings.py`` every Airflow process imports: it warms the scheduler."""
    assert settings.airflow_home is not None
    config = settings.airflow_home / "config"  # on sys.path of every Airflow process
    config.mkdir(parents=True, exist_ok=True)
    (config / "airflow_local_settings.py").write_text(
        "# Written by orchestration/airflow.py: see orchestration/warm_start.py.\n"
        "from orchestration.warm_start import warm\n\nwarm()\n__all__: list[str] = []\n"
    )


def dags_test(settings: Settings, dag_id: str, logical_date: str | None = None) -> subprocess.CompletedProcess[str]:
    """``airflow dags test``: one DAG run in this process, no scheduler needed."""
    return airflow(settings, "dags", "test", dag_id, *([logical_date] if logical_date else []))


def dags_test_in_turn(settings: Settings, runs: list[tuple[str, str | None]]) -> None:
    """Each (dag_id, logical date) run as ``airflow dags test`` runs it, in order, all in one Airflow process.

    One process parses the DAG folder once (``orchestration/dags_test.py``); the
    first failed run stops the rest.
    """
    specs = [f"{dag_id}@{logical_date}" if logical_date else dag_id for dag_id, logical_date in runs]
    proc = subprocess.run(
        [sys.executable, "-m", "orchestration.dags_test", *specs],
        env=env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise _failed(f"airflow dags test {', '.join(specs)}", proc)


def task_runs(settings: Settings, dag_id: str) -> list[dict[str, str]]:
    """Every task of the DAG's latest run: task_id, state, start_date, end_date (ISO; in run order).

    Read from the metadata database itself: ``airflow dags list-runs`` and
    ``tasks states-for-dag-run`` would start two Airflow processes per DAG.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(settings.airflow_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "select task_id, state, start_date, end_date from task_instance where dag_id = :dag and run_id = "
                    "(select run_id from dag_run where dag_id = :dag order by run_after desc, id desc limit 1)"
                ),
                {"dag": dag_id},
            ).all()
    finally:
        engine.dispose()
    runs = [
        {"task_id": str(task), "state": str(state or ""), "start_date": _iso(start), "end_date": _iso(end)}
        for task, state, start, end in rows
    ]
    return sorted(runs, key=lambda r: r["start_date"] or "~")


def _iso(value: object) -> str:
    """A timestamp as ISO text; SQLite hands back the text it stores, Postgres a datetime."""
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def task_states(settings: Settings, dag_id: str) -> dict[str, str]:
    """task_id -> state of the latest run of a DAG."""
    return {row["task_id"]: row["state"] for row in task_runs(settings, dag_id)}


@contextmanager
def standalone(settings: Settings, *, ready_timeout: float = 180.0) -> Iterator[str]:
    """``airflow standalone`` (API server, scheduler, DAG processor, triggerer); yields the UI URL."""
    assert settings.airflow_home is not None
    prepare(settings)
    url = f"http://localhost:{settings.airflow_port}"
    log = (settings.airflow_home / "standalone.log").open("ab")
    proc = subprocess.Popen(
        [_executable(), "standalone"], env=env(settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        try:
            wait_until_answering(proc, f"{url}/api/v2/monitor/health", ready_timeout, "airflow standalone")
        except (RuntimeError, TimeoutError) as exc:
            raise LabError(f"{exc}; see {log.name}") from None
        yield url
    finally:
        stop(proc, grace=60, group=True)  # standalone's components share its process group
        log.close()


def admin_password(settings: Settings) -> str | None:
    """The generated password of the ``admin`` user, once the API server has written it."""
    path = passwords_file(settings)
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(ADMIN_USER)


def backfill(settings: Settings, dag_id: str, from_date: str, to_date: str, *, reprocess: str = "none") -> None:
    """``airflow backfill create`` over [from_date, to_date]; a running scheduler executes it.

    ``reprocess``: "none" skips months that already ran, "completed" re-runs them too.
    """
    airflow(
        settings,
        "backfill",
        "create",
        "--dag-id",
        dag_id,
        "--from-date",
        from_date,
        "--to-date",
        to_date,
        "--reprocess-behavior",
        reprocess,
        "--max-active-runs",
        "1",
        retry_locked=True,
    )


def wait_for_runs(settings: Settings, dag_id: str, count: int, *, timeout: float = 900.0) -> list[dict[str, str]]:
    """Block until ``count`` runs of the DAG have finished; fail on a failed run."""
    deadline = time.monotonic() + timeout
    while True:
        runs = _json(airflow(settings, "dags", "list-runs", dag_id, "--output", "json"))
        failed = [r for r in runs if r["state"] == "failed"]
        if failed:
            raise LabError(f"{dag_id} run {failed[0]['run_id']} failed")
        done = [r for r in runs if r["state"] == "success"]
        if len(done) >= count:
            return done
        if time.monotonic() > deadline:
            raise LabError(f"{dag_id}: {len(done)} of {count} runs finished within {timeout:.0f} s")
        time.sleep(5)
