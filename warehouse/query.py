"""Read from the dbt target, whichever engine it is, as Arrow.

Both engines are read through DuckDB (natively, or through its postgres
extension), so callers get the same Arrow types from either target.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from core.settings import Settings
from warehouse.connection import attach_postgres, duckdb_connect


def query(settings: Settings, sql: str) -> pa.Table:
    """Run a read-only query on the warehouse; relations are ``schema.table``."""
    if settings.dbt_target == "duckdb":
        with duckdb_connect(settings, settings.duckdb_path, read_only=True) as conn:
            return conn.sql(sql).to_arrow_table()
    with duckdb_connect(settings) as conn:
        attach_postgres(conn, settings, read_only=True)
        conn.execute("use pg")
        return conn.sql(sql).to_arrow_table()


def query_all(settings: Settings, queries: dict[str, str]) -> dict[str, pa.Table]:
    """Run several read-only queries in one transaction: the results come from one state of the warehouse."""
    if settings.dbt_target == "duckdb":
        with duckdb_connect(settings, settings.duckdb_path, read_only=True) as conn:
            return _in_one_transaction(conn, queries)
    with duckdb_connect(settings) as conn:
        attach_postgres(conn, settings, read_only=True)
        conn.execute("use pg")
        return _in_one_transaction(conn, queries)


def _in_one_transaction(conn: duckdb.DuckDBPyConnection, queries: dict[str, str]) -> dict[str, pa.Table]:
    conn.execute("begin transaction")
    tables = {name: conn.sql(sql).to_arrow_table() for name, sql in queries.items()}
    conn.execute("commit")
    return tables


def row_counts(settings: Settings, relations: dict[str, str]) -> dict[str, int]:
    """Rows in each named relation."""
    if not relations:
        return {}
    union = " union all ".join(f"select '{name}' as name, count(*) as n from {rel}" for name, rel in relations.items())
    return {row["name"]: row["n"] for row in query(settings, union).to_pylist()}
