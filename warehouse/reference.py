"""The ``reference`` schema: each model version's reference profile as tables the monitoring models join.

A version's profile (fixed bins, quantiles, importance; ``ml.profile``) is
logged with its training run; ``lab monitor`` writes it here for every version
that answered predictions. Writing a version replaces its rows in one
transaction, so writing twice leaves the same rows. ``lab build`` creates the
tables empty when they are missing: the monitoring models then build with no
rows instead of failing on a missing relation.

The shape is written here once, in SQL DuckDB and Postgres both accept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.settings import Settings
from warehouse.connection import duckdb_connect, pg_connection

SCHEMA = "reference"
# Table -> its columns; every table starts with model_version.
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "reference_models": (
        ("model_version", "varchar"),
        ("run_id", "varchar"),
        ("roc_auc", "double precision"),
        ("roc_auc_lo", "double precision"),
        ("roc_auc_hi", "double precision"),
    ),
    "reference_features": (
        ("model_version", "varchar"),
        ("feature", "varchar"),
        ("kind", "varchar"),
        ("reference_rows", "bigint"),
        ("missing_share", "double precision"),
        ("reference_std", "double precision"),
        ("importance", "double precision"),
    ),
    "reference_bins": (
        ("model_version", "varchar"),
        ("feature", "varchar"),
        ("bin_index", "integer"),
        ("bin_kind", "varchar"),
        ("bin_label", "varchar"),
        ("lower_edge", "double precision"),
        ("upper_edge", "double precision"),
        ("share", "double precision"),
    ),
    "reference_categories": (
        ("model_version", "varchar"),
        ("feature", "varchar"),
        ("category", "varchar"),
        ("bin_index", "integer"),
    ),
    "reference_quantiles": (
        ("model_version", "varchar"),
        ("feature", "varchar"),
        ("quantile_index", "integer"),
        ("quantile_value", "double precision"),
    ),
}


def _create(execute: Callable[..., Any]) -> None:
    execute(f"create schema if not exists {SCHEMA}")
    for table, columns in TABLES.items():
        execute(f"create table if not exists {SCHEMA}.{table} ({', '.join(f'{n} {t}' for n, t in columns)})")


def _replace(
    execute: Callable[..., Any],
    executemany: Callable[..., Any],
    placeholder: str,
    version: str,
    rows: Mapping[str, Sequence[tuple[Any, ...]]],
) -> None:
    _create(execute)
    for table, columns in TABLES.items():
        execute(f"delete from {SCHEMA}.{table} where model_version = {placeholder}", (version,))
        if rows.get(table):
            markers = ", ".join([placeholder] * len(columns))
            executemany(f"insert into {SCHEMA}.{table} values ({markers})", [(version, *row) for row in rows[table]])


def ensure_tables(settings: Settings) -> None:
    """Create the reference tables, empty, where they are missing (``lab build`` calls this)."""
    if settings.dbt_target == "duckdb":
        with duckdb_connect(settings, settings.duckdb_path) as conn:
            _create(conn.execute)
    else:
        with pg_connection(settings) as conn:
            _create(conn.execute)


def write_version(settings: Settings, version: str, rows: Mapping[str, Sequence[tuple[Any, ...]]]) -> None:
    """Replace one model version's rows in every reference table (``rows``: table -> rows without the version)."""
    unknown = set(rows) - set(TABLES)
    if unknown:
        raise ValueError(f"no reference table named {sorted(unknown)}")
    if settings.dbt_target == "duckdb":
        with duckdb_connect(settings, settings.duckdb_path) as conn:
            conn.execute("begin")
            _replace(conn.execute, conn.executemany, "?", version, rows)
            conn.execute("commit")
    else:
        with pg_connection(settings) as conn, conn.cursor() as cur:
            _replace(cur.execute, cur.executemany, "%s", version, rows)
