"""Is a service of the stack healthy? The same question compose's healthchecks ask, asked from here.

Each check returns ``None`` when healthy, else what is wrong in a few words.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from core.processes import http_problem
from stack import seaweedfs
from stack.runtime import Stack


def postgres(stack: Stack) -> str | None:
    import psycopg

    state = stack.state()
    password = stack.secrets()["POSTGRES_PASSWORD"] if state.pg_managed else None
    try:
        with psycopg.connect(
            host=state.pg_host,
            port=state.pg_port,
            user=state.pg_superuser,
            password=password,
            dbname="postgres",
            connect_timeout=3,
        ) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def redis(stack: Stack) -> str | None:
    import redis as redis_client

    try:
        redis_client.Redis.from_url(stack.state().redis_url, socket_timeout=3).ping()
    except redis_client.RedisError as exc:
        return str(exc)
    return None


def _seaweedfs(server: str, replica: int = 1) -> Callable[[Stack], str | None]:
    """A server of the object store, asked what compose's healthcheck asks (stack/seaweedfs.py)."""

    def check(stack: Stack) -> str | None:
        return http_problem(seaweedfs.health_url(server, stack.seaweedfs_ports(), replica=replica))

    return check


def mlflow(stack: Stack) -> str | None:
    return http_problem(f"http://127.0.0.1:{stack.state().mlflow_port}/health")


def airflow_api_server(stack: Stack) -> str | None:
    return http_problem(f"http://127.0.0.1:{stack.state().airflow_port}/api/v2/monitor/health")


def airflow_scheduler(stack: Stack) -> str | None:
    return http_problem(f"http://127.0.0.1:{stack.state().scheduler_health_port}/health")


def airflow_components(port: int) -> dict[str, str] | str:
    """Airflow's own health report (``/api/v2/monitor/health``): each component's status, or why it gave none."""
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    try:
        report = httpx.get(url, timeout=3).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"{url}: {type(exc).__name__}"
    return {name: str((part or {}).get("status") or "no heartbeat") for name, part in report.items()}


def _airflow_component(component: str) -> Callable[[Stack], str | None]:
    """The DAG processor and the triggerer: as the API server's health report sees their heartbeats."""

    def check(stack: Stack) -> str | None:
        states = airflow_components(stack.state().airflow_port)
        if isinstance(states, str):
            return states
        status = states.get(component, "no heartbeat")
        return None if status == "healthy" else f"{component}: {status}"

    return check


def airflow_worker(stack: Stack) -> str | None:
    """Every worker replica answers a Celery ping through the broker."""
    from celery import Celery

    from stack.services import by_name

    state = stack.state()
    app = Celery(broker=state.redis_url, broker_transport_options={"global_keyprefix": state.redis_key_prefix})
    try:
        replies = app.control.ping(timeout=2.0) or []
    except Exception as exc:
        return f"celery ping: {exc}"
    finally:
        app.close()
    expected = by_name("airflow-worker").replicas
    return None if len(replies) >= expected else f"{len(replies)} of {expected} workers answer a ping"


def api(stack: Stack) -> str | None:
    # Live, not /ready: the API starts before any model is trained, and serves once one is promoted.
    return http_problem(f"http://127.0.0.1:{stack.state().api_port}/health")


HEARTBEAT_SECONDS = 60  # compose's healthcheck: the heartbeat file touched within the last minute


def stream_sink(stack: Stack) -> str | None:
    # The sink touches its heartbeat after every read of the stream (at least once a second).
    path = stack.settings_of(stack.environment("stream-sink")).sink_heartbeat_path
    if path is None or not path.exists():
        return f"no heartbeat at {path} yet"
    age = time.time() - path.stat().st_mtime
    return None if age < HEARTBEAT_SECONDS else f"{path} is {age:.0f} s old: the sink is not reading"


CHECKS: dict[str, Callable[[Stack], str | None]] = {
    "postgres": postgres,
    "redis": redis,
    "seaweedfs-master": _seaweedfs("master"),
    "seaweedfs-volume-1": _seaweedfs("volume", 1),
    "seaweedfs-volume-2": _seaweedfs("volume", 2),
    "seaweedfs-volume-3": _seaweedfs("volume", 3),
    "seaweedfs-filer": _seaweedfs("filer"),
    "s3": _seaweedfs("s3"),
    "mlflow": mlflow,
    "airflow-api-server": airflow_api_server,
    "airflow-scheduler": airflow_scheduler,
    "airflow-dag-processor": _airflow_component("dag_processor"),
    "airflow-triggerer": _airflow_component("triggerer"),
    "airflow-worker": airflow_worker,
    "api": api,
    "stream-sink": stream_sink,
}
