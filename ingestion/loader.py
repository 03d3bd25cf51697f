"""Land raw files in the object store and load them into Iceberg tables: ``ingest`` and its steps.

One load = one Iceberg snapshot. Data files are written in bounded batches
first; only then is a single snapshot committed that swaps the affected
partitions (``overwrite_partition``) or the merged keyed table (``upsert``).
A loader killed before that commit leaves the table at its previous snapshot;
the files it wrote are unreferenced and harmless.
"""

from __future__ import annotations

import functools
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from core.errors import BadRowsError, LabError, SchemaMismatchError
from core.months import month_index
from core.settings import Settings
from ingestion import prediction_export
from ingestion.commit import commit_with_retry, data_files_in
from ingestion.declarations import SourceDeclaration, identifier_problem
from ingestion.landing import LandedFile, land
from ingestion.quarantine import BadRow, QuarantineWriter, bad_rows, quarantine_table, write_quarantine
from ingestion.reading import RawBatch, read_batches, read_header
from ingestion.storage import ObjectStore, open_catalog
from ingestion.tables import ensure_table, evolve_schema, lineage_values
from ingestion.upsert import merged_files
from ingestion.validation import type_batch
from ingestion.writer import DataFileWriter, month_of

ProgressFn = Callable[[int], None]


@dataclass
class LoadResult:
    """What one load did; ``rows_in == rows_loaded + rows_quarantined`` always."""

    source: str
    table: str
    load_id: str
    partition: str | None
    files: list[LandedFile]
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    snapshot_id: int | None = None
    new_columns: list[str] = field(default_factory=list)
    commit_attempts: int = 0


@dataclass(frozen=True)
class _Load:
    """What the steps of one load share: the source, its table and this load's identity."""

    decl: SourceDeclaration
    identifier: str
    load_id: str
    loaded_at: datetime
    partition: str | None
    month: int | None  # ``partition`` as Iceberg's month index
    landed: list[LandedFile]


@dataclass
class _Read:
    """What reading and validating the landed files produced (rows not kept here went to the writers)."""

    rows_loaded: int = 0
    upserted: list[pa.Table] = field(default_factory=list)  # upsert mode keeps the (small, keyed) new rows


def ingest(
    decl: SourceDeclaration,
    settings: Settings,
    partition: str | None = None,
    progress: ProgressFn | None = None,
) -> LoadResult:
    """Land and load one declared source (optionally one month of it).

    Args:
        decl: the source declaration.
        settings: where the object store and catalog are.
        partition: 'YYYY-MM' to load one month of a partitioned source.
        progress: called with the number of rows read after each batch.

    Raises:
        SchemaMismatchError: a file lacks a required column, or its header has a
            column name that cannot be a table column (nothing is written).
        BadRowsError: the quarantined share passes ``settings.max_bad_row_share``.
        LabError: the partition is malformed or holds no rows, or a file cannot
            be read as its format at all. (The prediction log with no rows is
            not an error: the result says 0 rows and no snapshot.)
    """
    if partition is not None and decl.partition is None:
        raise LabError(f"source {decl.name} is not partitioned; load it without --partition")
    try:
        return _ingest(decl, settings, partition, progress)
    except OSError as exc:
        if not settings.uses_s3 or isinstance(exc, FileNotFoundError):
            raise
        # The S3 client's own error (pyarrow's or pyiceberg's) is one long line naming a key and a
        # curl code; say what failed, where, and that the commit, atomic, did not happen.
        raise LabError(
            f"the object store at {settings.s3_endpoint} failed while loading {decl.name}: "
            f"{str(exc).splitlines()[0][:300]}. Nothing of this load was committed; "
            "run the same ingest again once the store answers"
        ) from exc


def _ingest(
    decl: SourceDeclaration, settings: Settings, partition: str | None, progress: ProgressFn | None
) -> LoadResult:
    month = month_index(partition) if partition is not None else None

    catalog = open_catalog(settings)
    store = ObjectStore(settings.landing_uri, settings)
    identifier = decl.table_name(settings.raw_namespace)
    load_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    loaded_at = datetime.now(UTC)
    landed = _land_input(decl, settings, store, month)
    if not landed:  # only the prediction log can be empty: the API has answered nothing (that month) yet
        return LoadResult(source=decl.name, table=identifier, load_id=load_id, partition=partition, files=[])
    load = _Load(decl, identifier, load_id, loaded_at, partition, month, landed)
    result = LoadResult(source=decl.name, table=identifier, load_id=load_id, partition=partition, files=landed)

    extras = _check_headers(decl, store, landed)
    table = ensure_table(catalog, identifier, decl)
    result.new_columns = list(dict.fromkeys(c for columns in extras.values() for c in columns))
    if result.new_columns:
        evolve_schema(table, result.new_columns, ", ".join(f.name for f in landed))
        table = catalog.load_table(identifier)

    writer = DataFileWriter(table, settings.target_file_rows)
    quarantine = QuarantineWriter(
        quarantine_table(catalog, settings), settings.target_file_rows, identifier, load_id, loaded_at
    )
    try:
        read = _read_and_validate(load, store, extras, writer, quarantine, settings.batch_rows, progress)
        result.rows_loaded, result.rows_quarantined = read.rows_loaded, quarantine.rows
        result.rows_in = result.rows_loaded + result.rows_quarantined
        _check_bad_rows(load, result, quarantine, settings.max_bad_row_share)
        writer.flush()
        quarantined_files = quarantine.flush()
    except BaseException:
        writer.discard()
        quarantine.discard()
        raise

    # Quarantine first: if the data commit then fails, the next run rewrites the
    # same quarantine rows (which rows, and the slice they replace, are
    # deterministic), so nothing drifts.
    write_quarantine(catalog, settings, decl, identifier, quarantined_files, partition, landed, load_id)
    table, result.commit_attempts = _commit(catalog, settings, load, writer, read.upserted, result)
    snapshot = table.current_snapshot()
    result.snapshot_id = snapshot.snapshot_id if snapshot else None
    return result


def _land_input(decl: SourceDeclaration, settings: Settings, store: ObjectStore, month: int | None) -> list[LandedFile]:
    """The source's input in the landing area: its files, or the prediction log exported to one file."""
    if not decl.input.prediction_log:
        return land(decl, store, decl.input_files())
    with tempfile.TemporaryDirectory(prefix="lab-export-") as directory:
        exported = prediction_export.export(decl, settings, Path(directory), month)
        return land(decl, store, [exported]) if exported is not None else []


def _check_headers(decl: SourceDeclaration, store: ObjectStore, landed: list[LandedFile]) -> dict[str, list[str]]:
    """Check every file's header before anything is written; return each file's undeclared columns, by URI.

    An undeclared column becomes a table column (schema drift), so its name
    must be one a declaration could use: the header is the file's, not the
    declaration author's.

    Raises:
        SchemaMismatchError: a file lacks a required column, names a column
            twice, or has an undeclared column whose name is not a valid
            identifier (see ``ingestion.declarations.identifier_problem``).
    """
    declared = set(decl.column_names)
    required = [c.name for c in decl.columns if c.required]
    extras: dict[str, list[str]] = {}
    for landed_file in landed:
        with store.open(landed_file.uri) as handle:
            header = read_header(handle, landed_file.name, decl.format)
        missing = [c for c in required if c not in header]
        if missing:
            raise SchemaMismatchError(
                f"{landed_file.name}: required column {', '.join(repr(m) for m in missing)} "
                f"missing from source {decl.name} (found: {', '.join(header)})"
            )
        repeated = sorted(name for name, count in Counter(header).items() if count > 1)
        if repeated:
            raise SchemaMismatchError(f"{landed_file.name}: column {', '.join(map(repr, repeated))} appears twice")
        for name in header:
            problem = None if name in declared else identifier_problem(name)
            if problem:
                raise SchemaMismatchError(
                    f"{landed_file.name}: undeclared column {name!r} cannot be added to table {decl.table_key!r}: "
                    f"{problem}; rename it in the file, or declare and rename the source"
                )
        extras[landed_file.uri] = [h for h in header if h not in declared]
    return extras


def _read_and_validate(
    load: _Load,
    store: ObjectStore,
    extras: dict[str, list[str]],
    writer: DataFileWriter,
    quarantine: QuarantineWriter,
    batch_rows: int,
    progress: ProgressFn | None,
) -> _Read:
    """Read every landed file in bounded batches: good rows (with lineage) go to the writer, bad ones to quarantine.

    An upsert keeps its good rows instead: the merge needs them all at commit time.
    """
    read = _Read()
    rows_read = 0
    for landed_file in load.landed:
        lineage = lineage_values(landed_file, load.load_id, load.loaded_at)
        with store.open(landed_file.uri) as handle:
            for raw in read_batches(handle, landed_file.name, load.decl.format, batch_rows):
                rows_read += raw.rows_read
                good, bad = _validate(load, raw, extras[landed_file.uri])
                quarantine.add(raw, bad, landed_file)
                if good.num_rows:
                    for name, value in lineage.items():
                        good = good.append_column(name, pa.repeat(value, good.num_rows))
                    if load.decl.mode == "upsert":
                        read.upserted.append(good)
                    else:
                        writer.add(good)
                read.rows_loaded += good.num_rows
                if progress:
                    progress(rows_read)
    return read


def _validate(load: _Load, raw: RawBatch, extra: list[str]) -> tuple[pa.Table, list[BadRow]]:
    """Type one batch: the good rows this load keeps, and the bad ones it owns.

    A load of one month keeps only that month's rows, good or bad (see
    :func:`ingestion.quarantine.bad_rows`); a whole-table load keeps every row.
    Rows the reader rejected unread stay with ``raw`` (their month is unknown:
    every load of the file owns them).
    """
    decl = load.decl
    typed = type_batch(raw, decl.columns, extra, decl.null_values)
    part_col = decl.partition.column if decl.partition else None
    good = typed.good
    if part_col is not None and load.month is not None:
        good = good.filter(pc.equal(month_of(good.column(part_col)), load.month))
    return good, bad_rows(raw, typed, part_col, load.month)


def _check_bad_rows(load: _Load, result: LoadResult, quarantine: QuarantineWriter, max_share: float) -> None:
    """The gate before anything is committed: the load has rows, and few enough of them are bad.

    Raises:
        LabError: no rows (in the partition, for a partition load).
        BadRowsError: the quarantined share passes ``max_share``.
    """
    if result.rows_in == 0:
        where = f" in partition {load.partition}" if load.partition else ""
        raise LabError(f"source {load.decl.name} has no rows{where}; nothing was loaded")
    share = result.rows_quarantined / result.rows_in
    if share > max_share:
        raise BadRowsError(
            f"source {load.decl.name}: {result.rows_quarantined} of {result.rows_in} rows are bad "
            f"({share:.1%} > the {max_share:.1%} allowed by LAB_MAX_BAD_ROW_SHARE); "
            f"nothing was loaded. Most common: {quarantine.summary()}"
        )


def _commit(
    catalog: Catalog,
    settings: Settings,
    load: _Load,
    writer: DataFileWriter,
    upserted: list[pa.Table],
    result: LoadResult,
) -> tuple[Table, int]:
    """Commit the load's one snapshot (retrying conflicts); if that fails, remove the data files written.

    A partition load replaces its month's files; a whole-table load, every file;
    an upsert, every file by the merged table.
    """
    months = {load.month} if load.month is not None else None

    def plan(current: Table) -> tuple[list[DataFile], list[DataFile]]:
        if load.decl.mode == "upsert":
            return data_files_in(current, None), merged_files(current, upserted, load.decl.primary_key, settings)
        return data_files_in(current, months), writer.files

    properties = {
        "lab.load-id": load.load_id,
        "lab.source": load.decl.name,
        "lab.partition": load.partition or "*",
        "lab.source-files": ",".join(f.uri for f in load.landed),
        "lab.source-checksums": ",".join(f.sha256 for f in load.landed),
        "lab.rows-loaded": str(result.rows_loaded),
        "lab.rows-quarantined": str(result.rows_quarantined),
    }
    try:
        return commit_with_retry(
            functools.partial(catalog.load_table, load.identifier),
            plan,
            properties,
            settings.commit_retries,
            what=f"commit conflict on {load.identifier}",
        )
    except BaseException:
        writer.discard()
        raise
