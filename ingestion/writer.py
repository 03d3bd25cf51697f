"""Typed rows to Iceberg data files: Parquet files of bounded size, one month each, on a small thread pool."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.schema import sanitize_column_names
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.typedef import Record
from pyiceberg.utils.properties import property_as_int

from core.errors import LabError

log = logging.getLogger(__name__)

# Data files encode in parallel on this many threads (pyarrow releases the GIL while it encodes).
WRITE_THREADS = 2


def project(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Shape a batch exactly like the Iceberg table: same columns, order and types."""
    present = set(table.column_names)  # a list rebuilt on every access; once per batch here
    arrays = [
        table.column(f.name).cast(f.type) if f.name in present else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


class DataFileWriter:
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
            for month, part in self._partitions(project(rows.slice(offset, self.target_rows), self.schema)):
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
            first, last = month_of(pa.array([bounds["min"].as_py(), bounds["max"].as_py()], values.type)).to_pylist()
            if first == last:
                return [(first, _Rows(rows, rows.num_rows))]
        months = month_of(values)
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


def month_of(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Iceberg's month transform: months since 1970-01, of the UTC time for timestamps."""
    if pa.types.is_timestamp(values.type) and values.type.tz is not None:
        # Arrow keeps instants in UTC whatever the zone; reading them zone-less gives
        # the UTC calendar month the transform wants, without a zone lookup per value.
        values = values.cast(pa.timestamp(values.type.unit))
    return pc.add(pc.multiply(pc.subtract(pc.year(values), 1970), 12), pc.subtract(pc.month(values), 1))
