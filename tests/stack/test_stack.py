"""The full stack, really running: `lab stack up`, three months through the scheduler on Celery, train, serve.

One stack for the module, started by the real CLI on its own home and database
(the machine's Postgres and Redis where they answer, else its own), then
driven as a user would: `lab stack backfill`, `lab stack run lab -- lab train`,
HTTP to the API. One Celery worker is killed in the middle of a task; the run
must still succeed, the task retried on the other worker, and the lake loaded
once. The teardown is `lab stack down --volumes`, and checks nothing is left.
Run with `make test-stack` (marker ``stack``).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import boto3
import httpx
import psycopg
import pyarrow.compute as pc
import pytest

from core.settings import PROJECT_ROOT, Settings
from stack import jobs, supervisor
from stack.runtime import Stack
from tests.helpers.source_csv import raw_flights

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(1800)]

LAB = str(Path(sys.executable).with_name("lab"))
MONTHS = ("2013-01", "2013-02", "2013-03")
RETRIED = ("ingest", "publish")  # tasks with retries (Cosmos's dbt producer has none, by design)


def _lab(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    proc = subprocess.run([LAB, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"lab {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    home = tmp_path_factory.mktemp("stack")
    return {**base, "LAB_HOME": str(home), "LAB_PG_DATABASE": f"stack_{uuid.uuid4().hex[:8]}"}


@pytest.fixture(scope="module")
def stack(env: dict[str, str]) -> Iterator[Stack]:
    stack = Stack(Settings(_env_file=None, home=Path(env["LAB_HOME"]), pg_database=env["LAB_PG_DATABASE"]))  # type: ignore[call-arg]
    try:
        _lab(env, "stack", "up", timeout=600)
        yield stack
    finally:
        subprocess.run([LAB, "stack", "down", "--volumes"], env=env, capture_output=True, timeout=300, check=False)


def _query(stack: Stack, sql: str, role: str = "pipeline") -> list[tuple[object, ...]]:
    with psycopg.connect(stack.pg_url(role), connect_timeout=5) as conn:
        return list(conn.execute(sql).fetchall())  # type: ignore[arg-type]


def _s3_keys(stack: Stack, bucket: str) -> list[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.state().s3_port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _kill_a_worker_mid_task(stack: Stack) -> tuple[str, str, str]:
    """SIGKILL the whole process group of the worker running a retriable task of a later month; keep it down.

    Returns the run, the task and the worker killed.
    """
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        for run in jobs.task_runs(stack, "flights_monthly"):
            later = run.run_id >= "backfill__2013-02"  # the first month has shown both workers at work
            if run.task_id in RETRIED and run.state == "running" and run.hostname and later:
                replica = run.hostname.split("@")[0].removeprefix("worker-")
                name = f"airflow-worker-{replica}"
                info = supervisor.processes(stack)[name]
                os.killpg(info["pid"], signal.SIGKILL)  # the worker, its pool and the task: as a lost machine
                rpc = supervisor.client(stack)
                time.sleep(0.5)
                if supervisor.processes(stack)[name]["statename"] in {"STARTING", "RUNNING", "BACKOFF"}:
                    rpc.stopProcess(f"airflow-worker:{name}", True)
                return run.run_id, run.task_id, run.hostname
        time.sleep(0.2)
    raise AssertionError("no retriable task was seen running on a worker")


def _alive(pid: int) -> bool:
    """Running, not exited (a daemon's exited process can linger as a zombie under a container's init)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_stack_is_up_and_healthy(stack: Stack, env: dict[str, str]) -> None:
    status = _lab(env, "stack", "status")
    for service in ("minio", "mlflow", "airflow-scheduler", "airflow-worker", "api"):
        line = next(line for line in status.splitlines() if f" {service} " in line)
        assert "healthy" in line, line
    workers = [p for name, p in supervisor.processes(stack).items() if name.startswith("airflow-worker")]
    assert len(workers) == 2 and all(p["statename"] == "RUNNING" for p in workers)


def test_three_months_through_the_scheduler_on_celery_workers_survive_a_killed_worker(stack: Stack) -> None:
    jobs.start_backfill(stack, "flights_monthly", date(2013, 1, 1), date(2013, 3, 1))
    killed_run, killed_task, killed_worker = _kill_a_worker_mid_task(stack)
    runs = jobs.wait_for_backfill(stack, "flights_monthly", len(MONTHS), timeout=1200)
    assert sorted(runs.values()) == ["success"] * len(MONTHS)

    tasks = jobs.task_runs(stack, "flights_monthly")
    executed = [t for t in tasks if t.state == "success" and t.hostname]
    # Every task ran on a Celery worker (they name themselves worker-N@host), and both took work.
    assert executed and all(t.hostname.startswith("worker-") for t in executed), {t.hostname for t in executed}
    assert len({t.hostname for t in executed}) == 2
    retried = next(t for t in tasks if t.run_id == killed_run and t.task_id == killed_task)
    assert retried.state == "success" and retried.try_number >= 2
    assert retried.hostname != killed_worker  # the retry ran on the worker still alive

    # Idempotent under the retry: no flight in the lake twice, and every flight of January and February
    # there once (the lake's months are UTC months: March's last evening is April's, not loaded).
    source = raw_flights()
    rows, distinct = _query(
        stack,
        "select count(*), count(distinct (year, month, day, carrier, flight, origin)) from raw.flights",
    )[0]
    assert rows == distinct
    counts = dict(_query(stack, "select month, count(*) from raw.flights group by month"))
    for number in (1, 2):
        assert counts[number] == pc.sum(pc.equal(source.column("month"), number)).as_py(), number


def test_the_lake_is_in_the_bucket_and_its_catalog_in_postgres(stack: Stack) -> None:
    keys = _s3_keys(stack, "lab")
    assert any(k.startswith("warehouse/raw/flights/metadata/") and k.endswith(".metadata.json") for k in keys)
    assert any(k.startswith("warehouse/raw/flights/data/") and k.endswith(".parquet") for k in keys)
    tables = _query(stack, "select table_namespace, table_name from iceberg_tables", role="ingest")
    assert ("raw", "flights") in tables
    marts = _query(stack, "select flight_month, count(*) from analytics.training_flights group by 1 order by 1")
    assert [month for month, _ in marts] == list(MONTHS)


def test_training_logs_to_the_mlflow_server_and_its_artifacts_to_the_bucket(stack: Stack, env: dict[str, str]) -> None:
    windows = ["env", "LAB_VALIDATION_MONTHS=1", "LAB_TEST_MONTHS=1"]
    _lab(env, "stack", "run", "lab", "--", *windows, "lab", "train")
    _lab(env, "stack", "run", "lab", "--", "lab", "promote")
    artifacts = _s3_keys(stack, "mlflow")
    assert any(k.endswith("MLmodel") for k in artifacts), artifacts[:10]
    assert not (stack.lab_home / "mlartifacts").exists()  # nothing on local disk

    # The server asks for a sign-in, and the pipeline's own identity cannot choose what is served.
    mlflow_api = f"http://127.0.0.1:{stack.state().mlflow_port}/api/2.0/mlflow/registered-models/alias"
    body = {"name": "flight_delay", "alias": "champion", "version": "1"}
    assert httpx.post(mlflow_api, json=body, timeout=30).status_code == 401
    pipeline = ("pipeline", stack.secrets()["MLFLOW_PIPELINE_PASSWORD"])
    refused = httpx.post(mlflow_api, json=body, auth=pipeline, timeout=30)
    assert refused.status_code == 403 and "promotion step" in refused.text


def test_the_api_logs_every_answer_to_postgres(stack: Stack) -> None:
    from lab.traffic.examples import real_flight_requests

    api = f"http://127.0.0.1:{stack.state().api_port}"
    deadline, ready_in_a_row = time.monotonic() + 180, 0
    while ready_in_a_row < 20:  # every worker process of the API, whichever answers
        ready = httpx.get(f"{api}/ready", timeout=5).json()["status"] == "ready"
        ready_in_a_row = ready_in_a_row + 1 if ready else 0
        assert time.monotonic() < deadline, "the API did not pick up the champion"
        time.sleep(0.1 if ready else 1)
    flights = real_flight_requests(stack.pipeline_settings(), 200, "2013-03-15")
    assert len(flights) == 200
    answers = {}
    with httpx.Client(timeout=30) as client:
        for flight in flights:
            body = {k: v for k, v in flight.items() if k != "departure_delay_minutes"}
            response = client.post(f"{api}/predict", json=body)
            assert response.status_code == 200, response.text
            answers[response.json()["prediction_id"]] = response.json()["probability"]
    deadline = time.monotonic() + 30
    while True:
        ids = ", ".join(f"'{i}'" for i in answers)
        rows = dict(
            _query(
                stack,
                f"select prediction_id, probability from predictions where prediction_id in ({ids})",
                role="monitor",
            )
        )
        if len(rows) == len(answers) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert rows == answers


def test_doctor_finds_every_service_of_the_stack_healthy(env: dict[str, str]) -> None:
    report = _lab(env, "stack", "run", "lab", "--", "lab", "doctor")  # exit 0: no row failed
    assert report.count(" ok ") == 8, report


def test_airflow_s_graph_and_mlflow_s_model_page_render_in_chromium(stack: Stack, tmp_path: Path) -> None:
    """The running stack's UIs as a user opens them: the DAG's graph with its Cosmos group, the model's aliases."""
    from tests.helpers.browser import render_page

    state = stack.state()
    airflow = f"http://127.0.0.1:{state.airflow_port}"
    login = {"username": "admin", "password": stack.secrets()["AIRFLOW_ADMIN_PASSWORD"]}
    token = httpx.post(f"{airflow}/auth/token", json=login, timeout=30).json()["access_token"]
    shots = {"airflow": tmp_path / "airflow-graph.png", "mlflow": tmp_path / "mlflow-model.png"}
    # The UI's own stored preferences: the graph view, with the Cosmos group opened.
    views = {"default_dag_view": json.dumps("graph"), "flights_monthly/open-groups": json.dumps(["dbt"])}
    graph = render_page(
        f"{airflow}/dags/flights_monthly",
        shots["airflow"],
        expect="training_flights",  # a model's task, inside the opened group
        cookie={"name": "_token", "value": token},  # what Airflow's login page sets
        local_storage=views,
    )
    assert all(task in graph for task in ("ingest", "publish", "dbt_producer_watcher", "marts_refreshed"))
    # MLflow asks for a sign-in: the API's identity (serve) reads, as any signed-in one does.
    sign_in = base64.b64encode(f"serve:{stack.secrets()['MLFLOW_SERVE_PASSWORD']}".encode()).decode()
    model = render_page(
        f"http://127.0.0.1:{state.mlflow_port}/#/models/flight_delay",
        shots["mlflow"],
        expect="@ champion",
        headers={"Authorization": f"Basic {sign_in}"},
    )
    assert "flight_delay" in model and "Version 1" in model and "@ challenger" in model
    for png in shots.values():
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, png
    print(f"screenshots: {shots['airflow']} {shots['mlflow']}")


@pytest.mark.parametrize(
    "statement",
    ["select count(*) from raw.flights", "delete from analytics.training_flights"],
    ids=["read raw", "write marts"],
)
def test_the_serve_role_is_refused_outside_its_job(stack: Stack, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _query(stack, statement, role="serve")


def test_down_stops_every_process(stack: Stack, env: dict[str, str]) -> None:
    pids = [info["pid"] for info in supervisor.processes(stack).values() if info["pid"]]
    supervisord = int((stack.root / "supervisord.pid").read_text())
    _lab(env, "stack", "down", timeout=300)
    time.sleep(1)
    assert not [pid for pid in [*pids, supervisord] if _alive(pid)]
    assert json.loads(stack.state_file.read_text())["database"] == env["LAB_PG_DATABASE"]  # the state stays
    assert PROJECT_ROOT.exists()
