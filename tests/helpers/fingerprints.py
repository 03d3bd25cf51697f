"""The project's one checksum applied the ways the tests compare data: marts across builds, lake tables across loads."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.table import Table

from core.checksum import checksum
from core.settings import Settings


def fingerprint(table: pa.Table) -> tuple[int, str]:
    """(rows, order-independent content checksum); doubles rounded so DuckDB and Postgres compare."""
    return table.num_rows, checksum(table, float_digits=9)


def mart_fingerprints(settings: Settings) -> dict[str, tuple[int, str]]:
    """Every mart of the settings' warehouse, fingerprinted."""
    from warehouse.dbt import mart_relations
    from warehouse.query import query

    return {
        name: fingerprint(query(settings, f"select * from {rel}")) for name, rel in mart_relations(settings).items()
    }


def lake_fingerprint(table: Table) -> str:
    """A lake table's current rows without per-load lineage: loading the same bytes again gives the same value."""
    return checksum(table.scan().to_arrow(), exclude=("_load_id", "_loaded_at"))
