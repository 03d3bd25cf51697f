"""Rows that failed validation: which of them a load quarantines, and replacing its slice of the quarantine table."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

from core.months import month_label
from core.names import QUARANTINE_TABLE
from core.retry import with_retries
from core.settings import Settings
from ingestion.declarations import SourceDeclaration
from ingestion.landing import LandedFile
from ingestion.parsing import RawBatch, TypedBatch
from ingestion.writer import month_of

UNKNOWN_PARTITION = ""  # quarantined rows whose partition value itself is unreadable


@dataclass(frozen=True)
class BadRow:
    """A row of a raw batch that failed validation, and the quarantine partition it belongs to."""

    row: int  # index into the raw batch
    reason: str
    partition: str  # 'YYYY-MM', or UNKNOWN_PARTITION


def bad_rows(raw: RawBatch, typed: TypedBatch, part_col: str | None, month: int | None) -> list[BadRow]:
    """The batch's bad rows that belong to this load, each with its partition.

    A load of one month takes the bad rows of that month and those whose month
    cannot be read: the same slice :func:`write_quarantine` replaces.
    """
    if part_col is None:
        return [BadRow(r, reason, UNKNOWN_PARTITION) for r, reason in zip(typed.bad_rows, typed.reasons, strict=True)]
    months = _row_months(raw, part_col, typed.bad_rows)
    return [
        BadRow(r, reason, _partition_label(m))
        for r, reason, m in zip(typed.bad_rows, typed.reasons, months, strict=True)
        if month is None or m in (None, month)
    ]


def _row_months(raw: RawBatch, part_col: str, rows: list[int]) -> list[int | None]:
    """Month index of each bad row's partition value, or None when it does not parse."""
    if not rows or part_col not in raw.strings.schema.names:
        return [None] * len(rows)
    texts = pc.take(raw.strings.column(part_col), pa.array(rows))
    months: list[int | None] = []
    for text in texts.to_pylist():
        try:
            stamp = pc.cast(pa.array([text]), pa.timestamp("us", tz="UTC"))
            months.append(month_of(stamp)[0].as_py())
        except (pa.ArrowInvalid, TypeError):
            months.append(None)
    return months


def _partition_label(month: int | None) -> str:
    if month is None:
        return UNKNOWN_PARTITION
    return month_label(month)


def quarantine_rows(
    raw: RawBatch, bad: list[BadRow], table_name: str, source: LandedFile, load_id: str, quarantined_at: datetime
) -> list[dict[str, object]]:
    """Rows of the quarantine table for the bad rows of one batch of ``source``."""
    return [
        {
            "table_name": table_name,
            "partition": b.partition,
            "source_file": source.uri,
            "source_checksum": source.sha256,
            "line": raw.first_line + b.row,
            "raw_text": raw.raw_text(b.row),
            "reason": b.reason,
            "load_id": load_id,
            "quarantined_at": quarantined_at,
        }
        for b in bad
    ]


def _quarantine_schema() -> Schema:
    return Schema(
        NestedField(1, "table_name", StringType(), required=False),
        NestedField(2, "partition", StringType(), required=False),
        NestedField(3, "source_file", StringType(), required=False),
        NestedField(4, "source_checksum", StringType(), required=False),
        NestedField(5, "line", LongType(), required=False),
        NestedField(6, "raw_text", StringType(), required=False),
        NestedField(7, "reason", StringType(), required=False),
        NestedField(8, "load_id", StringType(), required=False),
        NestedField(9, "quarantined_at", TimestamptzType(), required=False),
    )


def write_quarantine(
    catalog: Catalog,
    settings: Settings,
    decl: SourceDeclaration,
    identifier: str,
    rows: list[dict[str, object]],
    partition: str | None,
    landed: list[LandedFile],
    load_id: str,
) -> None:
    """Replace this load's slice of the quarantine table with the rows just found.

    The slice: a whole-table load replaces every quarantined row of the table; a
    partition load replaces that month's rows and those with an unreadable month;
    an upsert replaces the rows of the files it loaded.
    """
    name = f"{settings.raw_namespace}.{QUARANTINE_TABLE}"
    table = catalog.create_table_if_not_exists(name, schema=_quarantine_schema())
    condition: BooleanExpression = EqualTo("table_name", identifier)
    if decl.mode == "upsert":
        condition = And(condition, In("source_checksum", {f.sha256 for f in landed}))
    elif partition is not None:
        condition = And(condition, In("partition", {partition, UNKNOWN_PARTITION}))
    props = {"lab.load-id": load_id, "lab.source": decl.name, "lab.partition": partition or "*"}
    with warnings.catch_warnings():
        # An empty slice to replace is the usual case (a clean load); pyiceberg warns on it.
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
        _replace_slice(catalog, settings, name, table, condition, rows, props)


def _replace_slice(
    catalog: Catalog,
    settings: Settings,
    name: str,
    table: Table,
    condition: BooleanExpression,
    rows: list[dict[str, object]],
    props: dict[str, str],
) -> None:
    """Overwrite the quarantine slice with ``rows`` (or delete it), retrying commit conflicts.

    A retry reloads the table (the conflict means another writer committed) after
    the same jittered backoff as the data commit (``core.retry``).
    """
    if not rows and table.current_snapshot() is None:
        return  # nothing quarantined now or ever: no empty snapshot
    data = pa.Table.from_pylist(rows, schema=table.schema().as_arrow()) if rows else None

    def attempt(number: int) -> None:
        current = table if number == 1 else catalog.load_table(name)
        if data is not None:
            current.overwrite(data, overwrite_filter=condition, snapshot_properties=props)
        else:
            current.delete(delete_filter=condition, snapshot_properties=props)

    with_retries(
        attempt, retries=settings.commit_retries, retry_on=(CommitFailedException,), what=f"commit conflict on {name}"
    )
