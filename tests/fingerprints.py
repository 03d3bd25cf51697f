"""Order-independent content hashes of tables and marts, for comparing builds."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc

from lab.settings import Settings


def fingerprint(table: pa.Table) -> tuple[int, str]:
    """(rows, order-independent content hash); doubles rounded so engines compare."""
    columns = {}
    for name in sorted(table.column_names):
        column = table.column(name)
        if pa.types.is_floating(column.type):
            column = pc.round(column, 9)
        columns[name] = column
    rows = pa.table(columns).to_pylist()
    total = 0
    for row in rows:
        total = (total + int.from_bytes(hashlib.sha256(repr(row).encode()).digest()[:16], "big")) % (1 << 128)
    return len(rows), f"{total:032x}"


def mart_fingerprints(settings: Settings) -> dict[str, tuple[int, str]]:
    """Every mart of the settings' warehouse, fingerprinted."""
    from transform.dbt import mart_relations
    from transform.warehouse import query

    return {
        name: fingerprint(query(settings, f"select * from {rel}")) for name, rel in mart_relations(settings).items()
    }
