"""Make the raw Iceberg tables visible to the dbt target, as of their current snapshot.

DuckDB reads the lake in place: ``raw.<table>`` becomes a view over
``iceberg_scan('<current metadata.json>')``, so nothing is copied and a build sees
exactly one snapshot per table. Postgres cannot read Iceberg, so each table is
copied into ``raw.<table>`` (streamed from pyiceberg in Arrow batches through
DuckDB's postgres extension) and swapped in atomically.

Either way ``raw.lake_snapshots`` records which snapshot of every table the
warehouse now holds: the lineage a trained model points back to.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

import duckdb
import psycopg
from psycopg import sql

from ingestion.errors import LabError
from ingestion.loader import QUARANTINE_TABLE
from ingestion.storage import open_catalog
from lab.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOTS_TABLE = "lake_snapshots"
EXTENSIONS = ("avro", "iceberg", "postgres")


@dataclass(frozen=True)
class PublishedTable:
    """One raw table as the warehouse sees it after publishing."""

    name: str
    snapshot_id: int
    metadata_location: str
    rows: int


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
    return conn


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


def _raw_tables(settings: Settings) -> list[PublishedTable]:
    catalog = open_catalog(settings)
    tables = []
    for ident in sorted(catalog.list_tables(settings.raw_namespace)):
        name = ident[-1]
        if name == QUARANTINE_TABLE:
            continue
        table = catalog.load_table(ident)
        snapshot = table.current_snapshot()
        if snapshot is None:
            continue
        rows = int((snapshot.summary or {}).get("total-records", 0))  # type: ignore[union-attr]
        tables.append(PublishedTable(name, snapshot.snapshot_id, table.metadata_location, rows))
    if not tables:
        raise LabError("the lake has no loaded tables; run `lab ingest` first")
    return tables


def publish(settings: Settings) -> list[PublishedTable]:
    """Publish every loaded raw table to ``settings.dbt_target``."""
    tables = _raw_tables(settings)
    if settings.dbt_target == "duckdb":
        _publish_duckdb(settings, tables)
    else:
        _publish_postgres(settings, tables)
    return tables


def _publish_duckdb(settings: Settings, tables: list[PublishedTable]) -> None:
    if settings.uses_s3:
        raise LabError("the duckdb target reads a local lake; with an S3 warehouse use LAB_DBT_TARGET=postgres")
    with duckdb_connect(settings, settings.duckdb_path) as conn:
        conn.execute("begin")
        conn.execute("create schema if not exists raw")
        for table in tables:
            location = table.metadata_location.removeprefix("file://").replace("'", "''")
            conn.execute(f"create or replace view raw.{table.name} as select * from iceberg_scan('{location}')")
        _write_snapshots_duckdb(conn, tables)
        conn.execute("commit")


def _write_snapshots_duckdb(conn: duckdb.DuckDBPyConnection, tables: list[PublishedTable]) -> None:
    conn.execute(
        f"create or replace table raw.{SNAPSHOTS_TABLE} (table_name varchar, snapshot_id bigint, "
        "metadata_location varchar, row_count bigint, published_at timestamptz)"
    )
    now = datetime.now(UTC)
    conn.executemany(
        f"insert into raw.{SNAPSHOTS_TABLE} values (?, ?, ?, ?, ?)",
        [(t.name, t.snapshot_id, t.metadata_location, t.rows, now) for t in tables],
    )


def ensure_pg_database(settings: Settings) -> None:
    """Create the warehouse database on the server if it is missing."""
    with psycopg.connect(settings.pg_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (settings.pg_database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(settings.pg_database)))


def _publish_postgres(settings: Settings, tables: list[PublishedTable]) -> None:
    ensure_pg_database(settings)
    catalog = open_catalog(settings)
    with duckdb_connect(settings) as duck:
        duck.execute("load postgres")
        duck.execute(f"attach '{settings.pg_url()}' as pg (type postgres)")
        duck.execute("create schema if not exists pg.raw")
        for table in tables:
            stage = f"_stage_{table.name}"
            duck.execute(f"drop table if exists pg.raw.{stage}")
            scan = catalog.load_table(f"{settings.raw_namespace}.{table.name}").scan(snapshot_id=table.snapshot_id)
            reader = scan.to_arrow_batch_reader()  # streamed: memory stays bounded
            duck.register("batches", reader)
            duck.execute(f"create table pg.raw.{stage} as select * from batches")
            duck.unregister("batches")
        duck.execute("detach pg")
    # Swap every staged table in at once, with the snapshot record, in one transaction.
    with psycopg.connect(settings.pg_url()) as conn:
        for table in tables:
            final, staged = sql.Identifier(table.name), sql.Identifier(f"_stage_{table.name}")
            conn.execute(sql.SQL("drop table if exists raw.{} cascade").format(final))
            conn.execute(sql.SQL("alter table raw.{} rename to {}").format(staged, final))
        conn.execute(sql.SQL("drop table if exists raw.{}").format(sql.Identifier(SNAPSHOTS_TABLE)))
        conn.execute(
            sql.SQL(
                "create table raw.{} (table_name text, snapshot_id bigint, metadata_location text, "
                "row_count bigint, published_at timestamptz)"
            ).format(sql.Identifier(SNAPSHOTS_TABLE))
        )
        now = datetime.now(UTC)
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("insert into raw.{} values (%s, %s, %s, %s, %s)").format(sql.Identifier(SNAPSHOTS_TABLE)),
                [(t.name, t.snapshot_id, t.metadata_location, t.rows, now) for t in tables],
            )
