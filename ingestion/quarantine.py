"""Rows that failed validation: which of them a load quarantines, and replacing its slice of the quarantine table.

A load's quarantined rows are written as data files of the quarantine table as
they are found, like its good rows, so memory stays bounded however many rows
are bad: only their count and a count per reason wait for the bad-row share
check. The files join the table in one commit once the load passes that check,
and are removed when it does not.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType

from core.months import month_label
from core.names import QUARANTINE_TABLE
from core.retry import with_retries
from core.settings import Settings
from ingestion.declarations import SourceDeclaration
from ingestion.landing import LandedFile
from ingestion.reading import RawBatch
from ingestion.validation import TypedBatch
from ingestion.writer import DataFileWriter, month_of

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
    labels = {m: _partition_label(m) for m in set(months)}
    return [
        BadRow(r, reason, labels[m])
        for r, reason, m in zip(typed.bad_rows, typed.reasons, months, strict=True)
        if month is None or m in (None, month)
    ]


def _row_months(raw: RawBatch, part_col: str, rows: list[int]) -> list[int | None]:
    """Month index of each bad row's partition value, or None when it does not parse."""
    if not rows or part_col not in raw.strings.schema.names:
        return [None] * len(rows)
    texts = pc.take(raw.strings.column(part_col), pa.array(rows))
    try:  # all at once when every value reads
        return month_of(pc.cast(texts, pa.timestamp("us", tz="UTC"))).to_pylist()
    except pa.ArrowInvalid:
        pass
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


class QuarantineWriter:
    """One load's quarantined rows, written out as quarantine data files as they are found.

    Holds at most what its :class:`DataFileWriter` buffers (``target_rows``
    rows, plus files being encoded) and one counter per distinct reason, so a
    file of millions of bad rows is refused by the share check without ever
    being held in memory.
    """

    def __init__(self, table: Table, target_rows: int, table_name: str, load_id: str, quarantined_at: datetime) -> None:
        self.writer = DataFileWriter(table, target_rows)
        self.rows = 0
        self.reasons: Counter[str] = Counter()  # by what is wrong, without the offending value
        self._table_name = pa.scalar(table_name, pa.large_string())
        self._load_id = pa.scalar(load_id, pa.large_string())
        self._quarantined_at = pa.scalar(quarantined_at, pa.timestamp("us", tz="UTC"))

    def add(self, raw: RawBatch, bad: list[BadRow], source: LandedFile) -> None:
        """Quarantine the bad rows of one batch of ``source`` and the rows it rejected unread."""
        rejected = raw.rejected
        count = len(bad) + len(rejected)
        if not count:
            return
        reasons = [b.reason for b in bad] + [r.reason for r in rejected]
        rows = pa.table(
            {
                "table_name": pa.repeat(self._table_name, count),
                "partition": pa.array([b.partition for b in bad] + [UNKNOWN_PARTITION] * len(rejected)),
                "source_file": pa.repeat(pa.scalar(source.uri, pa.large_string()), count),
                "source_checksum": pa.repeat(pa.scalar(source.sha256, pa.large_string()), count),
                "line": pa.array([raw.line(b.row) for b in bad] + [r.line for r in rejected], pa.int64()),
                "raw_text": pa.array(raw.raw_texts([b.row for b in bad]) + [r.text for r in rejected]),
                "reason": pa.array(reasons),
                "load_id": pa.repeat(self._load_id, count),
                "quarantined_at": pa.repeat(self._quarantined_at, count),
            }
        )
        self.writer.add(rows)
        self.rows += count
        self.reasons.update(reason.split(": ", 1)[0] for reason in reasons)

    def summary(self, top: int = 3) -> str:
        """The most common reasons, for the share check's message."""
        return "; ".join(f"{reason} ({count})" for reason, count in self.reasons.most_common(top))

    def flush(self) -> list[DataFile]:
        """Finish writing; the data files to commit."""
        self.writer.flush()
        return self.writer.files

    def discard(self) -> None:
        """Remove the files written (the load failed before committing)."""
        self.writer.discard()


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


def quarantine_table(catalog: Catalog, settings: Settings) -> Table:
    """The quarantine table of the raw namespace, created if it does not exist yet.

    Loaded first: pyiceberg's create_table_if_not_exists writes a new metadata file
    before the catalog refuses the name, leaving an orphan file in the lake per call.
    """
    identifier = f"{settings.raw_namespace}.{QUARANTINE_TABLE}"
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        return catalog.create_table_if_not_exists(identifier, schema=_quarantine_schema())


def write_quarantine(
    catalog: Catalog,
    settings: Settings,
    decl: SourceDeclaration,
    identifier: str,
    files: list[DataFile],
    partition: str | None,
    landed: list[LandedFile],
    load_id: str,
) -> None:
    """Replace this load's slice of the quarantine table with the data files of the rows just found.

    The slice: a whole-table load replaces every quarantined row of the table; a
    partition load replaces that month's rows and those with an unreadable month;
    an upsert replaces the rows of the files it loaded.
    """
    table = quarantine_table(catalog, settings)
    name = f"{settings.raw_namespace}.{QUARANTINE_TABLE}"
    condition: BooleanExpression = EqualTo("table_name", identifier)
    if decl.mode == "upsert":
        condition = And(condition, In("source_checksum", {f.sha256 for f in landed}))
    elif partition is not None:
        condition = And(condition, In("partition", {partition, UNKNOWN_PARTITION}))
    props = {"lab.load-id": load_id, "lab.source": decl.name, "lab.partition": partition or "*"}
    with warnings.catch_warnings():
        # An empty slice to replace is the usual case (a clean load); pyiceberg warns on it.
        warnings.filterwarnings("ignore", message="Delete operation did not match any records")
        _replace_slice(catalog, settings, name, table, condition, files, props)


def _replace_slice(
    catalog: Catalog,
    settings: Settings,
    name: str,
    table: Table,
    condition: BooleanExpression,
    files: list[DataFile],
    props: dict[str, str],
) -> None:
    """Swap the quarantine slice for ``files`` (or delete it), retrying commit conflicts.

    A retry reloads the table (the conflict means another writer committed) after
    the same jittered backoff as the data commit (``core.retry``); the files,
    already written, are the same on every attempt.
    """
    if not files and table.current_snapshot() is None:
        return  # nothing quarantined now or ever: no empty snapshot

    def attempt(number: int) -> None:
        current = table if number == 1 else catalog.load_table(name)
        commit_slice(current, condition, files, props)

    with_retries(
        attempt, retries=settings.commit_retries, retry_on=(CommitFailedException,), what=f"commit conflict on {name}"
    )


def commit_slice(table: Table, condition: BooleanExpression, files: list[DataFile], props: dict[str, str]) -> None:
    """One transaction: delete the rows matching ``condition``, then add ``files``.

    What ``Table.overwrite`` does with a dataframe, here with files already
    written.
    """
    with table.transaction() as txn:
        txn.delete(delete_filter=condition, snapshot_properties=props)
        if files:
            with txn.update_snapshot(snapshot_properties=props).fast_append() as append:
                for data_file in files:
                    append.append_data_file(data_file)
