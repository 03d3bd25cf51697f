"""Make the raw Iceberg tables visible to the dbt target, as of their current snapshot.

DuckDB reads the lake in place: ``raw.<table>`` becomes a view over
``iceberg_scan('<current metadata.json>')``, so nothing is copied and a build sees
exactly one snapshot per table. The same views serve a folder lake and an S3
one: only the location differs (a path, or the ``s3://`` URI read through
httpfs with the S3 secret every DuckDB connection, dbt's included, is given;
see warehouse/connection.py). A view is evaluated when it is read, so dbt's
connection reads the lake too. Postgres cannot read Iceberg, so each table is
copied into ``raw.<table>`` (streamed from pyiceberg in Arrow batches through
DuckDB's postgres extension) and swapped in atomically.

Either way ``raw.lake_snapshots`` records which snapshot of every table the
warehouse now holds: the lineage a trained model points back to.

A bundled source that was never loaded (the prediction log before the API's
first answer) is published empty, with its declared and lineage columns: the
models over it build, with no rows, instead of failing on a missing relation.
It has no snapshot, so ``raw.lake_snapshots`` does not name it. ``raw.flight_events``
is no declared source (the stream sink creates it on its first commit), but the
outcome models read it on every build, so until the sink has committed it is
published empty the same way, with the sink's schema.

Table names come from the catalog, so every one is quoted where SQL is built
(declarations only allow plain identifiers, but the catalog may hold others).
"""

from __future__ import annotations

import logging

import duckdb
import pyarrow as pa
from psycopg import sql

from core.errors import LabError
from core.names import FLIGHT_EVENTS_TABLE, QUARANTINE_TABLE
from core.settings import Settings
from core.uris import is_s3
from ingestion.declarations import load_declarations
from ingestion.event_sink import events_table_schema
from ingestion.storage import open_catalog
from ingestion.tables import empty_arrow_table
from warehouse import reference, snapshots
from warehouse.connection import attach_postgres, duckdb_connect, pg_connection
from warehouse.snapshots import PublishedTable

log = logging.getLogger(__name__)


def _quoted(identifier: str) -> str:
    """A DuckDB identifier, double-quoted (a quote inside doubled), so a name is never read as SQL."""
    return '"' + identifier.replace('"', '""') + '"'


def _object_store_error(settings: Settings, exc: Exception) -> LabError:
    """A failed read of an S3 lake, named as the object store's (wrong keys, a server down), in one line."""
    where = settings.s3_endpoint or f"S3 ({settings.s3_region})"
    reason = " ".join(str(exc).split())
    if len(reason) > 300:
        reason = reason[:300] + "…"
    return LabError(
        f"the object store at {where} refused or failed a read of {settings.warehouse_uri} "
        f"(check LAB_S3_ENDPOINT, LAB_S3_ACCESS_KEY_ID, LAB_S3_SECRET_ACCESS_KEY): {reason}"
    )


def _raw_tables(settings: Settings) -> list[PublishedTable]:
    catalog = open_catalog(settings)
    tables = []
    for ident in sorted(catalog.list_tables(settings.raw_namespace)):
        name = ident[-1]
        if name == QUARANTINE_TABLE:
            continue
        try:
            table = catalog.load_table(ident)  # reads its metadata file from the lake
        except OSError as exc:
            if not settings.uses_s3:
                raise
            raise _object_store_error(settings, exc) from None
        snapshot = table.current_snapshot()
        if snapshot is None:
            continue
        rows = int((snapshot.summary or {}).get("total-records", 0))
        tables.append(PublishedTable(name, snapshot.snapshot_id, table.metadata_location, rows))
    if not tables:
        raise LabError("the lake has no loaded tables; run `lab ingest` first")
    return tables


def never_loaded(loaded: set[str]) -> dict[str, pa.Table]:
    """Table name -> its empty table, for every bundled source (and the stream's events) the lake has not loaded.

    Only the bundled declarations, which the dbt project's sources name: a
    folder of the user's own (``LAB_SOURCES_DIRS``) is read when it is loaded,
    and a problem in it is that load's to report, not every build's. The events
    table has the columns the sink creates it with (``events_table_schema``).
    """
    shapes = {name: empty_arrow_table(decl) for name, decl in load_declarations().items()}
    shapes[FLIGHT_EVENTS_TABLE] = events_table_schema().as_arrow().empty_table()
    return {name: shape for name, shape in sorted(shapes.items()) if name not in loaded}


def publish(settings: Settings) -> list[PublishedTable]:
    """Publish every loaded raw table to ``settings.dbt_target``, and every declared or streamed unloaded one empty."""
    tables = _raw_tables(settings)
    empty = never_loaded({table.name for table in tables})
    if settings.dbt_target == "duckdb":
        _publish_duckdb(settings, tables, empty)
    else:
        _publish_postgres(settings, tables, empty)
    reference.ensure_tables(settings)  # the monitoring models' other input, empty until `lab monitor`
    return tables


def _scan_location(metadata_location: str) -> str:
    """Where DuckDB reads a table's metadata: an ``s3://`` URI as it is, a ``file://`` one as a path."""
    location = metadata_location if is_s3(metadata_location) else metadata_location.removeprefix("file://")
    return location.replace("'", "''")


def _publish_duckdb(settings: Settings, tables: list[PublishedTable], empty: dict[str, pa.Table]) -> None:
    with duckdb_connect(settings, settings.duckdb_path) as conn:
        conn.execute("begin")
        conn.execute("create schema if not exists raw")
        for table in tables:
            view = _quoted(table.name)
            scan = f"iceberg_scan('{_scan_location(table.metadata_location)}')"
            try:  # binding the view reads the table's metadata
                conn.execute(f"create or replace view raw.{view} as select * from {scan}")
            except (duckdb.HTTPException, duckdb.IOException) as exc:
                if not settings.uses_s3:
                    raise
                raise _object_store_error(settings, exc) from None
        for name, arrow in empty.items():
            # A view like a loaded table's, over an empty table of the declared shape.
            shape = _quoted(f"_declared_{name}")
            conn.register("declared", arrow)
            conn.execute(f"create or replace table raw.{shape} as select * from declared")
            conn.unregister("declared")
            conn.execute(f"create or replace view raw.{_quoted(name)} as select * from raw.{shape}")
        snapshots.replace(conn.execute, conn.executemany, tables, "?")
        conn.execute("commit")


def ensure_pg_database(settings: Settings) -> None:
    """Create the warehouse database on the server if it is missing."""
    with pg_connection(settings, "postgres", autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (settings.pg_database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(settings.pg_database)))


def _publish_postgres(settings: Settings, tables: list[PublishedTable], empty: dict[str, pa.Table]) -> None:
    ensure_pg_database(settings)
    catalog = open_catalog(settings)
    with duckdb_connect(settings) as duck:
        attach_postgres(duck, settings, read_only=False)
        duck.execute("create schema if not exists pg.raw")
        batches: dict[str, pa.RecordBatchReader | pa.Table] = dict(empty)
        for table in tables:
            scan = catalog.load_table(f"{settings.raw_namespace}.{table.name}").scan(snapshot_id=table.snapshot_id)
            batches[table.name] = scan.to_arrow_batch_reader()  # streamed: memory stays bounded
        for name, reader in batches.items():
            stage = _quoted(f"_stage_{name}")
            duck.execute(f"drop table if exists pg.raw.{stage}")
            duck.register("batches", reader)
            duck.execute(f"create table pg.raw.{stage} as select * from batches")
            duck.unregister("batches")
        duck.execute("detach pg")
    # Swap every staged table in at once, with the snapshot record, in one transaction.
    with pg_connection(settings) as conn:
        for name in [table.name for table in tables] + list(empty):
            final, staged = sql.Identifier(name), sql.Identifier(f"_stage_{name}")
            conn.execute(sql.SQL("drop table if exists raw.{} cascade").format(final))
            conn.execute(sql.SQL("alter table raw.{} rename to {}").format(staged, final))
        with conn.cursor() as cur:
            snapshots.replace(cur.execute, cur.executemany, tables, "%s")
