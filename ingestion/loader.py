"""Land raw files in the object store and load them into Iceberg tables.

One load = one Iceberg snapshot. Data files are written in bounded batches
first; only then is a single snapshot committed that swaps the affected
partitions (``overwrite_partition``) or the merged keyed table (``upsert``).
A loader killed before that commit leaves the table at its previous snapshot;
the files it wrote are unreferenced and harmless.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import And, BooleanExpression, EqualTo, In
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.transforms import MonthTransform
from pyiceberg.typedef import Record
from pyiceberg.types import LongType, NestedField, StringType, TimestamptzType
from pyiceberg.utils.properties import property_as_int

from core.errors import BadRowsError, LabError, SchemaMismatchError
from core.months import month_index, month_label
from core.names import QUARANTINE_TABLE
from core.settings import Settings
from ingestion.declarations import SourceDeclaration
from ingestion.parsing import read_batches, read_header, type_batch
from ingestion.storage import ObjectStore, open_catalog
from ingestion.types import ICEBERG_TYPES

log = logging.getLogger(__name__)

UNKNOWN_PARTITION = ""  # quarantined rows whose partition value itself is unreadable
# Data files encode in parallel on this many threads (pyarrow releases the GIL while it encodes).
WRITE_THREADS = 2

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class LandedFile:
    """A raw file copied into the landing area, addressed by its content."""

    uri: str
    sha256: str
    name: str


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def land(decl: SourceDeclaration, store: ObjectStore) -> list[LandedFile]:
    """Copy the declaration's input files to the landing area, content-addressed.

    The key is ``<source>/<sha256>/<file name>``: the same bytes land once, however
    often they are uploaded, and a changed file lands beside the old one.
    """
    landed = []
    for path in decl.input_files():
        sha = sha256_of(path)
        key = f"{decl.name}/{sha}/{path.name}"
        uri = store.uri(key)
        if not store.exists(uri):
            store.put_file(path, key)
        else:
            log.info("landing: %s already present", uri)
        landed.append(LandedFile(uri=uri, sha256=sha, name=path.name))
    return landed


def _table_schema(decl: SourceDeclaration) -> Schema:
    fields = [
        NestedField(i, c.name, ICEBERG_TYPES[c.type], required=False, doc=c.description or None)
        for i, c in enumerate(decl.columns, start=1)
    ]
    start = len(fields) + 1
    lineage = [
        NestedField(start, "_source_file", StringType(), required=False, doc="Landing URI of the raw file"),
        NestedField(start + 1, "_source_checksum", StringType(), required=False, doc="SHA-256 of the raw file"),
        NestedField(start + 2, "_load_id", StringType(), required=False, doc="The load that wrote the row"),
        NestedField(start + 3, "_loaded_at", TimestamptzType(), required=False, doc="When that load ran (UTC)"),
    ]
    return Schema(*fields, *lineage)


def _ensure_table(catalog, identifier: str, decl: SourceDeclaration) -> Table:  # type: ignore[no-untyped-def]
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    schema = _table_schema(decl)
    spec = PartitionSpec()
    if decl.partition:
        source_id = schema.find_field(decl.partition.column).field_id
        spec = PartitionSpec(
            PartitionField(
                source_id=source_id, field_id=1000, transform=MonthTransform(), name=f"{decl.partition.column}_month"
            )
        )
    properties = {"lab.source": decl.name, "lab.mode": decl.mode, "lab.primary-key": ",".join(decl.primary_key)}
    return catalog.create_table_if_not_exists(identifier, schema=schema, partition_spec=spec, properties=properties)


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


def _evolve_schema(table: Table, new_columns: list[str], files: str) -> Table:
    """Add undeclared source columns as nullable strings (schema drift)."""
    existing = {f.name for f in table.schema().fields}
    missing = [c for c in new_columns if c not in existing]
    if missing:
        with table.update_schema() as update:
            for name in missing:
                update.add_column(name, StringType(), doc=f"Added by schema drift from {files}")
        log.warning("schema drift: added %s to %s", ", ".join(missing), table.name())
    return table


def _project(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Shape a batch exactly like the Iceberg table: same columns, order and types."""
    present = set(table.column_names)  # a list rebuilt on every access; once per batch here
    arrays = [
        table.column(f.name).cast(f.type) if f.name in present else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _data_files_in(table: Table, partitions: set[int] | None) -> list[DataFile]:
    """Data files of the current snapshot, optionally only those of some months."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    files = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if partitions is None or entry.data_file.partition[0] in partitions:
                files.append(entry.data_file)
    return files


def _commit_with_retry(
    load_table: Callable[[], Table],
    build: Callable[[Table], tuple[list[DataFile], list[DataFile]]],
    properties: dict[str, str],
    retries: int,
) -> tuple[Table, int]:
    """Commit one overwrite snapshot, retrying when a concurrent writer won the race.

    ``build`` is called on a fresh table each attempt and returns (files to remove,
    files to add), so the delete set always matches the snapshot being replaced.
    pyiceberg 0.12 retries a stale commit itself, but keeps its stale delete set and
    so refuses (``ValidationException``) an overwrite whose base gained files in the
    meantime, even in another partition; re-planning here makes such races succeed.
    """
    for attempt in range(1, retries + 2):
        table = load_table()
        remove, add = build(table)
        try:
            with table.transaction() as txn, txn.update_snapshot(snapshot_properties=properties).overwrite() as files:
                for data_file in remove:
                    files.delete_data_file(data_file)
                for data_file in add:
                    files.append_data_file(data_file)
            return table, attempt  # the commit updated it in place: no need to read it back
        except (CommitFailedException, ValidationException):
            if attempt > retries:
                raise
            delay = min(2.0, 0.05 * 2**attempt) * (0.5 + random.random())
            log.warning("commit conflict on %s (attempt %d); retrying in %.2fs", table.name(), attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class _DataFileWriter:
    """Buffers typed rows per month and writes them as Iceberg data files of bounded size.

    Files are Parquet written exactly as pyiceberg's ``write_file`` would (the
    table's writer properties, field ids in the file schema, column statistics
    from the file footer) but on a small thread pool, so encoding runs on other
    cores while the caller parses the next batch. Memory stays bounded: at most
    ``target_rows`` rows wait in the buffer and at most ``2 * target_rows`` are
    being written (``add`` waits for the oldest files beyond that).
    """

    def __init__(self, table: Table, target_rows: int) -> None:
        self.table = table
        self.schema = table.schema().as_arrow()
        self.target_rows = target_rows
        self.max_writing_rows = 2 * target_rows
        self.files: list[DataFile] = []
        self._format = _ParquetDataFiles(table)
        self._buffers: dict[int | None, list[_Rows]] = {}
        self._buffered = 0
        self._writing: deque[tuple[int, Future[DataFile]]] = deque()
        self._writing_rows = 0
        self._pool: ThreadPoolExecutor | None = None
        self._task_ids = itertools.count()

    def add(self, rows: pa.Table) -> None:
        # Slicing keeps every file at most about target_rows, even for one huge table.
        for offset in range(0, rows.num_rows, self.target_rows):
            for month, part in self._partitions(_project(rows.slice(offset, self.target_rows), self.schema)):
                self._buffers.setdefault(month, []).append(part)
            self._buffered += min(rows.num_rows - offset, self.target_rows)
            if self._buffered >= self.target_rows:
                self._write_buffered()

    def flush(self) -> None:
        """Write whatever is buffered and wait until every file is complete."""
        self._write_buffered()
        while self._writing:
            self._finish_oldest()
        self._close_pool()

    def _write_buffered(self) -> None:
        for month, parts in self._buffers.items():
            count = sum(part.count for part in parts)
            while self._writing and self._writing_rows + count > self.max_writing_rows:
                self._finish_oldest()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="iceberg-write")
            future = self._pool.submit(self._write_file, next(self._task_ids), month, parts)
            self._writing.append((count, future))
            self._writing_rows += count
        self._buffers, self._buffered = {}, 0

    def _write_file(self, task_id: int, month: int | None, parts: list[_Rows]) -> DataFile:
        """On a writer thread: gather one month's rows, then write them as one file."""
        rows = pa.concat_tables([part.rows if part.mask is None else part.rows.filter(part.mask) for part in parts])
        return self._format.write(task_id, month, rows)

    def _close_pool(self) -> None:
        """Stop the writer threads (every file is finished by now); the next write starts new ones."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _finish_oldest(self) -> None:
        count, future = self._writing.popleft()
        self._writing_rows -= count
        self.files.append(future.result())

    def _partitions(self, rows: pa.Table) -> list[tuple[int | None, _Rows]]:
        """Which months a batch holds (None: the table is unpartitioned), and its rows of each.

        A batch nearly always falls in one month: its earliest and latest values
        show that without a month per row, and it is kept whole. One that straddles
        a month boundary gets a row mask per month; the copying filter runs later,
        on a writer thread.
        """
        column = self._format.partition_column
        if column is None or not rows.num_rows:
            return [(None, _Rows(rows, rows.num_rows))]
        values = rows.column(column)
        if not values.null_count:
            bounds = pc.min_max(values)
            first, last = _month_of(pa.array([bounds["min"].as_py(), bounds["max"].as_py()], values.type)).to_pylist()
            if first == last:
                return [(first, _Rows(rows, rows.num_rows))]
        months = _month_of(values)
        out = []
        for month in pc.unique(months).to_pylist():
            mask = pc.is_null(months) if month is None else pc.equal(months, month)
            out.append((month, _Rows(rows, pc.sum(mask).as_py(), mask)))
        return out

    def discard(self) -> None:
        """Best-effort removal of written files when the load is abandoned."""
        while self._writing:
            try:
                self._finish_oldest()
            except Exception:  # the load is failing anyway; remove what did get written
                log.warning("a data file write failed while discarding", exc_info=True)
        self._close_pool()
        for data_file in self.files:
            try:
                self.table.io.delete(data_file.file_path)
            except OSError:
                log.warning("could not remove %s", data_file.file_path)
        self.files = []


@dataclass(frozen=True)
class _Rows:
    """Buffered rows of one month: a whole batch, or the rows of a batch under ``mask``."""

    rows: pa.Table
    count: int
    mask: pa.ChunkedArray | pa.Array | None = None


class _ParquetDataFiles:
    """Writes one partition's rows as one Parquet data file of a table and describes it.

    Everything that depends only on the table (file schema, writer options,
    statistics plan, file locations) is worked out once, not once per file.
    Thread-safe: ``write`` only reads this object.
    """

    def __init__(self, table: Table) -> None:
        metadata = table.metadata
        file_format = metadata.properties.get(TableProperties.WRITE_FILE_FORMAT, "parquet")
        if file_format.lower() != "parquet":
            raise LabError(f"{table.name()}: the loader writes Parquet data files, not {file_format}")
        schema = table.schema()
        # pyiceberg names Parquet columns after the sanitised schema (field ids stay the same).
        file_schema = sanitize_column_names(schema)
        self.io = table.io
        self.spec = table.spec()
        self.schema = schema
        self.spec_id = metadata.default_spec_id
        self.arrow_schema = file_schema.as_arrow()  # carries the PARQUET:field_id of every column
        self.options = _parquet_writer_options(metadata.properties)
        self.row_group_rows = property_as_int(
            metadata.properties,
            TableProperties.PARQUET_ROW_GROUP_LIMIT,
            TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT,
        )
        self.stats_plan = compute_statistics_plan(file_schema, metadata.properties)
        self.column_ids = parquet_path_to_id_mapping(file_schema)
        self.locations = load_location_provider(metadata.location, metadata.properties)
        self.write_uuid = uuid.uuid4()
        self.partition_column: str | None = None
        if not self.spec.is_unpartitioned():
            # Declarations allow exactly one partition field: month(<timestamp column>).
            self.partition_column = schema.find_column_name(self.spec.fields[0].source_id)

    def write(self, task_id: int, month: int | None, rows: pa.Table) -> DataFile:
        key = self._partition_key(month)
        # pyiceberg's WriteTask naming: unique per (load, task).
        name = f"00000-{task_id}-{self.write_uuid}.parquet"
        path = self.locations.new_data_location(data_file_name=name, partition_key=key)
        output = self.io.new_output(path)
        # The writer closes (writing the footer) before the stream does.
        with (
            output.create(overwrite=True) as stream,
            pq.ParquetWriter(stream, self.arrow_schema, **self.options) as writer,
        ):
            named = pa.Table.from_arrays(rows.columns, schema=self.arrow_schema)  # the sanitised names
            writer.write_table(named, row_group_size=self.row_group_rows)
        # The footer pyarrow just wrote: the same source pyiceberg reads its statistics from.
        footer = writer.writer.metadata
        statistics = data_file_statistics_from_parquet_metadata(footer, self.stats_plan, self.column_ids)
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=FileFormat.PARQUET,
            partition=key.partition if key else Record(),
            file_size_in_bytes=len(output),
            sort_order_id=None,
            spec_id=self.spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )

    def _partition_key(self, month: int | None) -> PartitionKey | None:
        if self.partition_column is None:
            return None
        value = PartitionFieldValue(field=self.spec.fields[0], value=month)
        return PartitionKey(field_values=[value], partition_spec=self.spec, schema=self.schema)


def _parquet_writer_options(properties: dict[str, str]) -> dict[str, object]:
    """pyarrow ParquetWriter options from the table's ``write.parquet.*`` properties.

    The same properties and defaults pyiceberg's own writer applies (zstd at the
    codec's default level, 1 MiB pages, 2 MiB dictionary pages, 20,000-row pages).
    """
    codec = properties.get(TableProperties.PARQUET_COMPRESSION, TableProperties.PARQUET_COMPRESSION_DEFAULT)
    return {
        "compression": "none" if codec == "uncompressed" else codec,
        "compression_level": property_as_int(
            properties, TableProperties.PARQUET_COMPRESSION_LEVEL, TableProperties.PARQUET_COMPRESSION_LEVEL_DEFAULT
        ),
        "data_page_size": property_as_int(
            properties, TableProperties.PARQUET_PAGE_SIZE_BYTES, TableProperties.PARQUET_PAGE_SIZE_BYTES_DEFAULT
        ),
        "dictionary_pagesize_limit": property_as_int(
            properties, TableProperties.PARQUET_DICT_SIZE_BYTES, TableProperties.PARQUET_DICT_SIZE_BYTES_DEFAULT
        ),
        "write_batch_size": property_as_int(
            properties, TableProperties.PARQUET_PAGE_ROW_LIMIT, TableProperties.PARQUET_PAGE_ROW_LIMIT_DEFAULT
        ),
        "store_decimal_as_integer": True,
    }


def _month_of(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Iceberg's month transform: months since 1970-01, of the UTC time for timestamps."""
    if pa.types.is_timestamp(values.type) and values.type.tz is not None:
        # Arrow keeps instants in UTC whatever the zone; reading them zone-less gives
        # the UTC calendar month the transform wants, without a zone lookup per value.
        values = values.cast(pa.timestamp(values.type.unit))
    return pc.add(pc.multiply(pc.subtract(pc.year(values), 1970), 12), pc.subtract(pc.month(values), 1))


def _summarise_reasons(reasons: Iterable[str], top: int = 3) -> str:
    counts = Counter(r.split(": ", 1)[0] for r in reasons)
    return "; ".join(f"{reason} ({count})" for reason, count in counts.most_common(top))


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
        SchemaMismatchError: a file lacks a required column (nothing is written).
        BadRowsError: the quarantined share passes ``settings.max_bad_row_share``.
        LabError: the partition is malformed or holds no rows.
    """
    if partition is not None and decl.partition is None:
        raise LabError(f"source {decl.name} is not partitioned; load it without --partition")
    wanted_month = month_index(partition) if partition is not None else None

    catalog = open_catalog(settings)
    store = ObjectStore(settings.landing_uri, settings)
    identifier = decl.table_name(settings.raw_namespace)
    load_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    loaded_at = datetime.now(UTC)
    landed = land(decl, store)
    result = LoadResult(source=decl.name, table=identifier, load_id=load_id, partition=partition, files=landed)

    # Check every file's header before writing anything.
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
        bad_names = [h for h in header if h.startswith("_") or not h]
        if bad_names:
            raise SchemaMismatchError(
                f"{landed_file.name}: column names may not be empty or start with '_': {bad_names}"
            )
        extras[landed_file.uri] = [h for h in header if h not in declared]

    table = _ensure_table(catalog, identifier, decl)
    all_extras = list(dict.fromkeys(c for cols in extras.values() for c in cols))
    if all_extras:
        table = _evolve_schema(table, all_extras, ", ".join(f.name for f in landed))
        table = catalog.load_table(identifier)
        result.new_columns = all_extras

    writer = _DataFileWriter(table, settings.target_file_rows)
    merged_rows: list[pa.Table] = []  # upsert mode keeps the (small, keyed) new rows
    quarantined: list[dict[str, object]] = []
    part_col = decl.partition.column if decl.partition else None
    rows_read = 0
    try:
        for landed_file in landed:
            # Typed like the table's columns, so repeating them needs no conversion per row.
            lineage = {
                "_source_file": pa.scalar(landed_file.uri, pa.large_string()),
                "_source_checksum": pa.scalar(landed_file.sha256, pa.large_string()),
                "_load_id": pa.scalar(load_id, pa.large_string()),
                "_loaded_at": pa.scalar(loaded_at, pa.timestamp("us", tz="UTC")),
            }
            with store.open(landed_file.uri) as handle:
                for raw in read_batches(handle, landed_file.name, decl.format, settings.batch_rows):
                    rows_read += raw.strings.num_rows
                    typed = type_batch(raw, decl.columns, extras[landed_file.uri], decl.null_values)
                    good = typed.good
                    bad_partitions: list[str] = []
                    if part_col is not None:
                        bad_months = _row_months(raw, part_col, typed.bad_rows, decl)
                        if wanted_month is not None:
                            good = good.filter(pc.equal(_month_of(good.column(part_col)), wanted_month))
                        keep = [
                            i for i, m in enumerate(bad_months) if wanted_month is None or m in (None, wanted_month)
                        ]
                        bad_partitions = [_partition_label(bad_months[i]) for i in keep]
                        bad_idx = [typed.bad_rows[i] for i in keep]
                        reasons = [typed.reasons[i] for i in keep]
                    else:
                        bad_idx, reasons = typed.bad_rows, typed.reasons
                        bad_partitions = [UNKNOWN_PARTITION] * len(bad_idx)
                    for row, reason, part in zip(bad_idx, reasons, bad_partitions, strict=True):
                        quarantined.append(
                            {
                                "table_name": identifier,
                                "partition": part,
                                "source_file": landed_file.uri,
                                "source_checksum": landed_file.sha256,
                                "line": raw.first_line + row,
                                "raw_text": raw.raw_text(row),
                                "reason": reason,
                                "load_id": load_id,
                                "quarantined_at": loaded_at,
                            }
                        )
                    if good.num_rows:
                        for name, value in lineage.items():
                            good = good.append_column(name, pa.repeat(value, good.num_rows))
                        if decl.mode == "upsert":
                            merged_rows.append(good)
                        else:
                            writer.add(good)
                    result.rows_loaded += good.num_rows
                    result.rows_quarantined += len(bad_idx)
                    if progress:
                        progress(rows_read)
        result.rows_in = result.rows_loaded + result.rows_quarantined
        if result.rows_in == 0:
            where = f" in partition {partition}" if partition else ""
            raise LabError(f"source {decl.name} has no rows{where}; nothing was loaded")
        share = result.rows_quarantined / result.rows_in
        if share > settings.max_bad_row_share:
            raise BadRowsError(
                f"source {decl.name}: {result.rows_quarantined} of {result.rows_in} rows are bad "
                f"({share:.1%} > the {settings.max_bad_row_share:.1%} allowed by LAB_MAX_BAD_ROW_SHARE); "
                f"nothing was loaded. Most common: {_summarise_reasons(q['reason'] for q in quarantined)}"  # type: ignore[misc]
            )
        writer.flush()
    except BaseException:
        writer.discard()
        raise

    months = {wanted_month} if wanted_month is not None else None
    properties = {
        "lab.load-id": load_id,
        "lab.source": decl.name,
        "lab.partition": partition or "*",
        "lab.source-files": ",".join(f.uri for f in landed),
        "lab.source-checksums": ",".join(f.sha256 for f in landed),
        "lab.rows-loaded": str(result.rows_loaded),
        "lab.rows-quarantined": str(result.rows_quarantined),
    }

    # Quarantine first: if the data commit then fails, the next run rewrites the
    # same quarantine rows (the filter below is deterministic), so nothing drifts.
    _write_quarantine(catalog, settings, decl, identifier, quarantined, partition, landed, load_id)

    def build(current: Table) -> tuple[list[DataFile], list[DataFile]]:
        if decl.mode == "upsert":
            return _data_files_in(current, None), _merged_files(current, merged_rows, decl.primary_key, settings)
        return _data_files_in(current, months), writer.files

    def load_table() -> Table:
        return catalog.load_table(identifier)

    try:
        table, attempts = _commit_with_retry(load_table, build, properties, settings.commit_retries)
    except BaseException:
        writer.discard()
        raise
    result.commit_attempts = attempts
    snapshot = table.current_snapshot()
    result.snapshot_id = snapshot.snapshot_id if snapshot else None
    return result


def _row_months(raw, part_col: str, rows: list[int], decl: SourceDeclaration) -> list[int | None]:  # type: ignore[no-untyped-def]
    """Month index of each bad row's partition value, or None when it does not parse."""
    if not rows or part_col not in raw.strings.schema.names:
        return [None] * len(rows)
    texts = pc.take(raw.strings.column(part_col), pa.array(rows))
    months: list[int | None] = []
    for text in texts.to_pylist():
        try:
            stamp = pc.cast(pa.array([text]), pa.timestamp("us", tz="UTC"))
            months.append(_month_of(stamp)[0].as_py())
        except (pa.ArrowInvalid, TypeError):
            months.append(None)
    return months


def _partition_label(month: int | None) -> str:
    if month is None:
        return UNKNOWN_PARTITION
    return month_label(month)


def _merged_files(current: Table, new_parts: list[pa.Table], key: list[str], settings: Settings) -> list[DataFile]:
    """Upsert for keyed (dimension) tables: new rows replace old rows with the same key.

    The whole merged table is rewritten in one snapshot. That is the right trade
    for dimension tables of thousands of rows; a large keyed table would want
    merge-on-read deletes instead.
    """
    schema = current.schema().as_arrow()
    new = pa.concat_tables([_project(t, schema) for t in new_parts]) if new_parts else schema.empty_table()
    # Within one load the last row for a key wins.
    new = new.append_column("__pos", pa.array(range(len(new)), type=pa.int64()))
    last = new.group_by(key).aggregate([("__pos", "max")]).column("__pos_max")
    new = new.take(pc.sort_indices(last)).drop_columns(["__pos"])
    old = current.scan().to_arrow() if current.current_snapshot() else schema.empty_table()
    old = _project(old, schema)
    if len(old):
        kept = old.join(new.select(key), keys=key, join_type="left anti")
        merged = pa.concat_tables([_project(kept, schema), new])
    else:
        merged = new
    writer = _DataFileWriter(current, settings.target_file_rows)
    writer.add(merged)
    writer.flush()
    return writer.files


def _write_quarantine(
    catalog,  # type: ignore[no-untyped-def]
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
    catalog,  # type: ignore[no-untyped-def]
    settings: Settings,
    name: str,
    table: Table,
    condition: BooleanExpression,
    rows: list[dict[str, object]],
    props: dict[str, str],
) -> None:
    """Overwrite the quarantine slice with ``rows`` (or delete it), retrying commit conflicts."""
    if not rows and table.current_snapshot() is None:
        return  # nothing quarantined now or ever: no empty snapshot
    data = pa.Table.from_pylist(rows, schema=table.schema().as_arrow()) if rows else None
    for attempt in range(settings.commit_retries + 1):
        try:
            if data is not None:
                table.overwrite(data, overwrite_filter=condition, snapshot_properties=props)
            else:
                table.delete(delete_filter=condition, snapshot_properties=props)
            return
        except CommitFailedException:
            if attempt == settings.commit_retries:
                raise
            table = catalog.load_table(name)
