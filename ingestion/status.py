"""What is in the lake: tables, partitions, snapshots, last loads, quarantine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import EqualTo

from core.names import QUARANTINE_TABLE
from core.settings import Settings


@dataclass
class TableStatus:
    """One Iceberg table as a user sees it in ``lab lake status``."""

    name: str
    rows: int
    partitions: int
    snapshots: int
    snapshot_id: int | None
    last_load_id: str | None
    last_loaded_at: datetime | None
    metadata_location: str


def lake_status(catalog: Catalog, settings: Settings) -> list[TableStatus]:
    """Every table of the raw namespace, the quarantine table last."""
    names = sorted(
        (".".join(ident) for ident in catalog.list_tables(settings.raw_namespace)),
        key=lambda n: (n.endswith(f".{QUARANTINE_TABLE}"), n),
    )
    out = []
    for name in names:
        table = catalog.load_table(name)
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot and snapshot.summary else None
        partitions = (
            len(table.inspect.partitions())
            if snapshot and not table.spec().is_unpartitioned()
            else (1 if snapshot else 0)
        )
        out.append(
            TableStatus(
                name=name,
                rows=int(summary["total-records"]) if summary and "total-records" in summary else 0,
                partitions=partitions,
                snapshots=len(table.snapshots()),
                snapshot_id=snapshot.snapshot_id if snapshot else None,
                last_load_id=summary.get("lab.load-id") if summary else None,
                last_loaded_at=datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC) if snapshot else None,
                metadata_location=table.metadata_location,
            )
        )
    return out


def quarantined_rows(catalog: Catalog, settings: Settings, table: str | None = None, limit: int = 50) -> pa.Table:
    """Quarantined rows, optionally of one table (given as ``flights`` or ``raw.flights``)."""
    try:
        quarantine = catalog.load_table(f"{settings.raw_namespace}.{QUARANTINE_TABLE}")
    except NoSuchTableError:
        return pa.table({"table_name": [], "line": [], "reason": [], "raw_text": []})
    if table is not None and "." not in table:
        table = f"{settings.raw_namespace}.{table}"
    scan = quarantine.scan(row_filter=EqualTo("table_name", table)) if table else quarantine.scan()
    data = scan.to_arrow().sort_by([("table_name", "ascending"), ("source_file", "ascending"), ("line", "ascending")])
    return data.slice(0, limit) if limit else data
