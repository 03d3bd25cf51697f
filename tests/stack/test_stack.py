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
from typing import Any

import httpx
import psycopg
import pyarrow.compute as pc
import pytest

from core.settings import PROJECT_ROOT, Settings
from ingestion.storage import open_catalog
from stack import jobs, seaweedfs, supervisor
from stack.runtime import Stack
from tests.helpers.source_csv import raw_flights

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(1800)]

LAB = str(Path(sys.executable).with_name("lab"))
MONTHS = ("2013-01", "2013-02", "2013-03")
RETRIED = ("ingest", "publish")  # tasks with retries (Cosmos's dbt producer has none, by design)


def _lab(env: dict[str, str], *args: str, timeout: float = 900, check: bool = True) -> str:
    proc = subprocess.run([LAB, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0 or not check, f"lab {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
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


def _s3(stack: Stack, identity: str) -> Any:
    return seaweedfs.client(f"http://127.0.0.1:{stack.state().s3_port}", *stack.s3_keys(identity))


def _s3_keys(stack: Stack, bucket: str) -> list[str]:
    s3 = _s3(stack, seaweedfs.ADMIN)  # the test looks at everything; no service holds these keys
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
    volumes = tuple(f"seaweedfs-volume-{i}" for i in range(1, seaweedfs.VOLUME_SERVERS + 1))
    servers = ("seaweedfs-master", *volumes, "seaweedfs-filer", "s3")
    for service in (*servers, "mlflow", "airflow-scheduler", "airflow-worker", "api", "stream-sink"):
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
    # Every volume of the lake on two of the three volume servers (replication 001).
    copies = seaweedfs.copies(f"http://127.0.0.1:{stack.seaweedfs_ports().master}")
    assert copies and set(copies.values()) == {2}, copies
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


def _refused(call: Any) -> str:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refusal:
        call()
    return str(refusal.value.response["Error"]["Code"])


def test_each_job_s_identity_is_enforced_by_the_object_store(stack: Stack, env: dict[str, str]) -> None:
    keys = _s3_keys(stack, "lab")
    data_file = next(k for k in keys if k.startswith("warehouse/raw/flights/data/") and k.endswith(".parquet"))
    artifact = next(k for k in _s3_keys(stack, "mlflow") if k.endswith("MLmodel"))
    serve, ingest = _s3(stack, "serve"), _s3(stack, "ingest")
    published = next(k for k in keys if k.startswith("features/"))
    assert serve.get_object(Bucket="lab", Key=published)["Body"].read()  # its job: the published features
    assert _refused(lambda: serve.get_object(Bucket="lab", Key=data_file)) == "AccessDenied"
    for key in ("features/forged.json", "landing/forged.csv", data_file):
        assert _refused(lambda key=key: serve.put_object(Bucket="lab", Key=key, Body=b"{}")) == "AccessDenied"
    assert _refused(lambda: ingest.get_object(Bucket="mlflow", Key=artifact)) == "AccessDenied"
    assert _refused(lambda: ingest.put_object(Bucket="mlflow", Key=artifact, Body=b"")) == "AccessDenied"
    assert _refused(lambda: _s3(stack, "pipeline").create_bucket(Bucket="stolen")) == "AccessDenied"
    # No keys, and wrong keys: refused before anything is read.
    from botocore import UNSIGNED
    from botocore.config import Config

    endpoint = f"http://127.0.0.1:{stack.state().s3_port}"
    anonymous = boto3_client(endpoint, config=Config(signature_version=UNSIGNED))
    assert _refused(lambda: anonymous.get_object(Bucket="lab", Key=published)) == "AccessDenied"
    wrong = seaweedfs.client(endpoint, "serve", "not-the-secret")
    assert _refused(lambda: wrong.get_object(Bucket="lab", Key=published)) == "SignatureDoesNotMatch"
    unknown = seaweedfs.client(endpoint, "nobody", "x" * 32)
    assert _refused(lambda: unknown.get_object(Bucket="lab", Key=published)) == "InvalidAccessKeyId"
    # The ingest job does its job as itself: a month more, with its own role and keys.
    # The lake's months are UTC months: April's load brings March's last evening, so March is now whole.
    _lab(env, "stack", "run", "ingest", "--", "lab", "ingest", "--partition", "2013-04")
    flights = (
        open_catalog(stack.pipeline_settings())
        .load_table(f"{stack.pipeline_settings().raw_namespace}.flights")
        .scan()
        .to_arrow()
    )
    months = flights.column("month")
    assert pc.sum(pc.equal(months, 3)).as_py() == pc.sum(pc.equal(raw_flights().column("month"), 3)).as_py()
    assert pc.sum(pc.equal(months, 4)).as_py() > 0
    # lab doctor checks each job's access as that job: the API's reads the features only.
    report = _lab(env, "stack", "run", "api", "--", "lab", "doctor", check=False)
    access = next(line for line in report.splitlines() if "access as serve" in line)
    assert " ok " in access and "reads features" in access and "writes nothing" in access, access


def test_the_sink_service_lands_streamed_events_in_the_lake_once(stack: Stack) -> None:
    from ingestion.event_stream import connect, publish
    from ingestion.events import bundled_flights, events_from_flights, iter_events

    settings = stack.settings_of(stack.environment("stream-sink"))
    flights = bundled_flights()
    december = flights.filter(pc.and_(pc.equal(flights["month"], 12), pc.equal(flights["day"], 1)))
    events = list(iter_events(events_from_flights(december)))[:50]
    client = connect(settings.stream_redis_url)
    publish(client, settings.stream_key, events)
    publish(client, settings.stream_key, events[:5])  # sent twice: counted once
    deadline = time.monotonic() + 60
    while client.xpending(settings.stream_key, settings.sink_consumer_group)["pending"] < 55:
        assert time.monotonic() < deadline, "the sink did not read the stream"
        time.sleep(0.5)
    # The batch bound is 5 minutes; a clean stop (SIGTERM, as `docker compose stop`) commits the open batch.
    rpc = supervisor.client(stack)
    rpc.stopProcess("stream-sink")
    rpc.startProcess("stream-sink")
    table = open_catalog(settings).load_table(f"{settings.raw_namespace}.flight_events")
    landed = table.scan(selected_fields=("event_id",)).to_arrow()["event_id"].to_pylist()
    assert sorted(landed) == sorted(event.event_id for event in events)
    assert client.xpending(settings.stream_key, settings.sink_consumer_group)["pending"] == 0
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    assert summary["lab.stream.key"] == settings.stream_key


def boto3_client(endpoint: str, **options: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **options)


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
    assert report.count(" ok ") == 9, report  # the object store's row and the pipeline's access row


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


def test_down_then_up_keeps_the_lake_the_features_and_the_artifacts(stack: Stack, env: dict[str, str]) -> None:
    before = {
        "rows": _query(stack, "select month, count(*) from raw.flights group by month order by month"),
        "lab": sorted(_s3_keys(stack, "lab")),
        "mlflow": sorted(_s3_keys(stack, "mlflow")),
    }
    _lab(env, "stack", "down", timeout=300)
    _lab(env, "stack", "up", timeout=600)
    assert sorted(_s3_keys(stack, "lab")) == before["lab"] and sorted(_s3_keys(stack, "mlflow")) == before["mlflow"]
    status = _lab(env, "stack", "run", "lab", "--", "lab", "lake", "status")
    assert "flights" in status
    assert _query(stack, "select month, count(*) from raw.flights group by month order by month") == before["rows"]
    # The API loads the champion's artifact from the object store again, and a new run logs to the server.
    api = f"http://127.0.0.1:{stack.state().api_port}"
    deadline = time.monotonic() + 180
    while httpx.get(f"{api}/ready", timeout=5).json()["status"] != "ready":
        assert time.monotonic() < deadline, "the API did not load its model after the restart"
        time.sleep(1)
    windows = ["env", "LAB_VALIDATION_MONTHS=1", "LAB_TEST_MONTHS=1"]
    _lab(env, "stack", "run", "lab", "--", *windows, "lab", "train", "--model", "baseline")
    models_before = [k for k in before["mlflow"] if isinstance(k, str) and k.endswith("MLmodel")]
    assert len([k for k in _s3_keys(stack, "mlflow") if k.endswith("MLmodel")]) > len(models_before)


def test_down_stops_every_process(stack: Stack, env: dict[str, str]) -> None:
    pids = [info["pid"] for info in supervisor.processes(stack).values() if info["pid"]]
    supervisord = int((stack.root / "supervisord.pid").read_text())
    _lab(env, "stack", "down", timeout=300)
    time.sleep(1)
    assert not [pid for pid in [*pids, supervisord] if _alive(pid)]
    assert json.loads(stack.state_file.read_text())["database"] == env["LAB_PG_DATABASE"]  # the state stays
    assert PROJECT_ROOT.exists()
