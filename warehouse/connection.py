"""The one way into the warehouse: DuckDB connections whose extensions come from local wheels.

DuckDB is the embedded warehouse itself, and also the engine that reads the
Postgres warehouse (its postgres extension) and the Iceberg lake (its iceberg
extension, and httpfs for a lake on S3). Extensions ship as PyPI wheels
(``duckdb-extension-<name>``) and are installed from those files, never
downloaded at run time.

With an S3 lake every connection gets a temporary (in-memory) S3 secret built
from the settings, so ``iceberg_scan`` over an ``s3://`` location works on it.
dbt's own connection gets the same secret through ``profiles.yml``, from the
``LAB_DUCKDB_S3_*`` variables of ``s3_secret_env``: the key is never in a
file, a log line or a process argument.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
import psycopg

from core.errors import LabError
from core.settings import Settings
from core.uris import redact

EXTENSIONS = ("avro", "httpfs", "iceberg", "postgres")
SECRET_NAME = "lab_lake"


def _extension_file(name: str) -> Path:
    """The extension binary shipped in the ``duckdb-extension-<name>`` wheel."""
    package = f"duckdb_extension_{name}"
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"the DuckDB extension package {package} is not installed; run `make install`")
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.glob(f"extensions/*/{name}.duckdb_extension"))
    if not found:
        raise LabError(f"{package} ships no extension binary under {root}")
    return found[-1]


def duckdb_connect(
    settings: Settings, path: Path | str | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose extensions come from local wheels, never the network."""
    ext_dir = settings.duckdb_extension_directory
    assert ext_dir is not None
    ext_dir.mkdir(parents=True, exist_ok=True)
    target = str(path) if path is not None else ":memory:"
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _release_in_process_dbt()
    conn = duckdb.connect(
        target,
        read_only=read_only,
        config={"extension_directory": str(ext_dir), "autoinstall_known_extensions": False},
    )
    for name in EXTENSIONS:
        installed = ext_dir.glob(f"v*/*/{name}.duckdb_extension")
        if not any(installed):
            conn.execute(f"install '{_extension_file(name)}'")
    if settings.uses_s3:
        _create_s3_secret(conn, settings)
    return conn


def s3_secret_env(settings: Settings) -> dict[str, str]:
    """The S3 secret's fields as the ``LAB_DUCKDB_S3_*`` variables ``profiles.yml`` reads (for dbt's connection).

    Empty key fields on a local lake: DuckDB then signs nothing, and never reaches S3 anyway.
    """
    endpoint = urlparse(settings.s3_endpoint) if settings.s3_endpoint else None
    secret = settings.s3_secret_access_key
    return {
        "LAB_DUCKDB_S3_KEY_ID": settings.s3_access_key_id or "",
        "LAB_DUCKDB_S3_SECRET": secret.get_secret_value() if secret is not None else "",
        "LAB_DUCKDB_S3_REGION": settings.s3_region,
        # DuckDB wants host:port, without the scheme; AWS's own endpoint when none is set.
        "LAB_DUCKDB_S3_ENDPOINT": endpoint.netloc if endpoint else "s3.amazonaws.com",
        # An S3-compatible server (SeaweedFS) addresses buckets by path; AWS by virtual host.
        "LAB_DUCKDB_S3_URL_STYLE": "path" if endpoint else "vhost",
        "LAB_DUCKDB_S3_USE_SSL": "false" if endpoint and endpoint.scheme == "http" else "true",
    }


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _create_s3_secret(conn: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    """A temporary S3 secret on ``conn``: the same fields as dbt's, from ``s3_secret_env``."""
    fields = s3_secret_env(settings)
    conn.execute("load httpfs")
    conn.execute(
        f"create or replace temporary secret {SECRET_NAME} (type s3"
        f", key_id {_sql_string(fields['LAB_DUCKDB_S3_KEY_ID'])}"
        f", secret {_sql_string(fields['LAB_DUCKDB_S3_SECRET'])}"
        f", region {_sql_string(fields['LAB_DUCKDB_S3_REGION'])}"
        f", endpoint {_sql_string(fields['LAB_DUCKDB_S3_ENDPOINT'])}"
        f", url_style {_sql_string(fields['LAB_DUCKDB_S3_URL_STYLE'])}"
        f", use_ssl {fields['LAB_DUCKDB_S3_USE_SSL']})"
    )


def _release_in_process_dbt() -> None:
    """Close the DuckDB handle an in-process dbt run left open, if any.

    dbt-duckdb keeps its connection after an in-process invocation (Cosmos's
    DBT_RUNNER mode inside ``airflow dags test``, where every task shares one
    process); DuckDB then refuses a second connection to the same file with
    other settings. A real worker runs each task in its own process, where this
    finds nothing to do.
    """
    manager = sys.modules.get("dbt.adapters.duckdb.connections")
    if manager is None:
        return
    cls = manager.DuckDBConnectionManager
    if cls._ENV is not None:
        cls._ENV.close()
        cls.close_all_connections()


def attach_postgres(conn: duckdb.DuckDBPyConnection, settings: Settings, *, read_only: bool) -> None:
    """Attach the Postgres warehouse to ``conn`` as ``pg``.

    Raises:
        LabError: the server cannot be reached or refuses; DuckDB's message
            repeats the connection string, so its password is redacted first.
    """
    mode = ", read_only" if read_only else ""
    try:
        conn.execute("load postgres")
        conn.execute(f"attach '{settings.pg_url()}' as pg (type postgres{mode})")
    except duckdb.Error as exc:
        raise LabError(f"the Postgres warehouse is unavailable: {redact(str(exc))}") from None


@contextmanager
def pg_connection(settings: Settings, database: str | None = None, *, autocommit: bool = False) -> Iterator[Any]:
    """A psycopg connection to the Postgres warehouse (or another database on its server).

    Raises:
        LabError: the connection failed (the message carries no password).
    """
    try:
        conn = psycopg.connect(settings.pg_url(database), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise LabError(f"the Postgres warehouse is unavailable: {redact(str(exc))}") from None
    with conn:
        yield conn
