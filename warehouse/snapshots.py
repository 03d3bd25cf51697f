"""``raw.lake_snapshots``: which Iceberg snapshot of every raw table the warehouse holds.

Publishing writes it beside the raw relations, in the same transaction; a
reproduction writes it into its scratch warehouse the same way; training copies
it onto the MLflow run as lineage. Its shape is written here once, in SQL that
DuckDB and Postgres both accept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.names import SNAPSHOTS_TABLE
from core.settings import Settings
from warehouse.query import query

RELATION = f"raw.{SNAPSHOTS_TABLE}"
COLUMNS = (
    ("table_name", "varchar"),
    ("snapshot_id", "bigint"),
    ("metadata_location", "varchar"),
    ("row_count", "bigint"),
    ("published_at", "timestamptz"),
)


@dataclass(frozen=True)
class PublishedTable:
    """One raw table as the warehouse sees it after publishing."""

    name: str
    snapshot_id: int
    metadata_location: str
    rows: int


def replace(
    execute: Callable[..., Any], executemany: Callable[..., Any], tables: Sequence[PublishedTable], placeholder: str
) -> None:
    """Drop and recreate the table with one row per published table.

    ``execute`` and ``executemany`` are the connection's own (DuckDB's or
    psycopg's), so the write joins whatever transaction the caller holds;
    ``placeholder`` is that driver's parameter marker (``?`` or ``%s``).
    """
    execute(f"drop table if exists {RELATION}")
    execute(f"create table {RELATION} ({', '.join(f'{name} {kind}' for name, kind in COLUMNS)})")
    now = datetime.now(UTC)
    markers = ", ".join([placeholder] * len(COLUMNS))
    executemany(
        f"insert into {RELATION} values ({markers})",
        [(t.name, t.snapshot_id, t.metadata_location, t.rows, now) for t in tables],
    )


def recorded(settings: Settings) -> dict[str, int]:
    """Raw table name -> the Iceberg snapshot id the warehouse holds."""
    rows = query(settings, f"select table_name, snapshot_id from {RELATION} order by table_name").to_pylist()
    return {row["table_name"]: int(row["snapshot_id"]) for row in rows}
