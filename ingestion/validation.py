"""Type a raw batch against the declaration: good rows as Arrow, and why each bad row was refused.

Values arrive as text (``ingestion.reading``); each declared column is cast to
its type, and a value that does not parse, does not fit, or is missing where
required sends its row to quarantine with a reason naming the column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ingestion.declarations import Column
from ingestion.reading import RawBatch
from ingestion.types import ARROW_TYPES

_TRUE = {"true", "t", "yes", "y", "1"}

_FALSE = {"false", "f", "no", "n", "0"}

# Digits Arrow refuses as an int or long can only be out of the type's range.
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass
class TypedBatch:
    """The good rows of a raw batch, typed, and why each bad row was refused."""

    good: pa.Table
    bad_rows: list[int] = field(default_factory=list)  # indices into the raw batch
    reasons: list[str] = field(default_factory=list)


def _parse_one(text: str, kind: str) -> tuple[object, str | None]:
    """One value as Arrow would cast it, or why it is refused (``is not a valid long``, ...)."""
    try:
        return pc.cast(pa.array([text]), ARROW_TYPES[kind])[0].as_py(), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if kind in {"int", "long"} and _INTEGER.fullmatch(text):
        return None, f"is out of range for {kind}"  # the digits parse; the value does not fit
    return None, f"is not a valid {kind}"


def _cast_column(values: pa.Array, kind: str) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    """Cast a text column to ``kind``; return the typed values and each failure: (what is wrong, row mask).

    The whole column is cast at once (fast path); only when that fails is each
    value tried alone, so clean data never pays for the bad-row search. A double
    must be finite: ``inf``, ``nan`` and ``1e999`` (overflow) parse, but no
    consumer of the lake can use them.
    """
    target = ARROW_TYPES[kind]
    if kind == "string":
        return pc.cast(values, target), []
    if kind == "boolean":
        lowered = pc.utf8_lower(pc.utf8_trim_whitespace(values))
        is_true = pc.is_in(lowered, value_set=pa.array(sorted(_TRUE)))
        is_false = pc.is_in(lowered, value_set=pa.array(sorted(_FALSE)))
        failed = pc.and_(pc.is_valid(values), pc.invert(pc.or_(is_true, is_false)))
        typed = pc.if_else(pc.is_valid(values), is_true, pa.scalar(None, pa.bool_()))
        return typed, [("is not a valid boolean", pc.fill_null(failed, False))]
    failures: list[tuple[str, pa.Array]] = []
    try:
        typed = pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        typed, failures = _cast_each(values, kind)
    if kind == "double":
        failures.append(("is not a finite number", pc.fill_null(pc.invert(pc.is_finite(typed)), False)))
    return typed, failures


def _cast_each(values: pa.Array, kind: str) -> tuple[pa.Array, list[tuple[str, pa.Array]]]:
    """The slow path of :func:`_cast_column`: every value on its own, each failure with its reason."""
    parsed: list[object] = []
    why: list[str | None] = []
    for text in values.to_pylist():
        value, problem = (None, None) if text is None else _parse_one(text, kind)
        parsed.append(value)
        why.append(problem)
    failures = [(problem, pa.array([w == problem for w in why])) for problem in dict.fromkeys(why) if problem]
    return pa.array(parsed, type=ARROW_TYPES[kind]), failures


def _missing(text: pa.Array, null_tokens: pa.Array) -> pa.Array:
    """Which values are missing: a null token, or a null (JSONL and Parquet have them; CSV text does not)."""
    return pc.or_(pc.is_null(text), pc.is_in(text, value_set=null_tokens))


def type_batch(raw: RawBatch, columns: list[Column], extra: list[str], null_values: list[str]) -> TypedBatch:
    """Type the declared columns, keep undeclared ones as text, and find bad rows.

    A row is bad when a declared value does not parse as its type (or is out of
    its range, or is a double that is not finite), or a required value is
    missing. Bad rows are returned by index with every reason found.

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
    problems: list[tuple[str, pa.Array, str | None]] = []  # (reason, row mask, column whose value to show)
    arrays: dict[str, pa.Array] = {}
    for col in columns:
        if col.name not in present:
            arrays[col.name] = pa.nulls(n, type=ARROW_TYPES[col.type])
            if col.required:
                problems.append((f"missing required field {col.name!r}", pa.array([True] * n), None))
            continue
        text = batch.column(col.name)
        is_null = _missing(text, nulls)
        text = pc.if_else(is_null, pa.scalar(None, pa.string()), text)
        typed, failures = _cast_column(text, col.type)
        arrays[col.name] = typed
        if col.required:
            problems.append((f"missing required field {col.name!r}", is_null, None))
        problems.extend((f"{col.name!r} {what}", failed, col.name) for what, failed in failures)
    for name in extra:
        text = batch.column(name)
        is_null = _missing(text, nulls)
        arrays[name] = pc.cast(pc.if_else(is_null, pa.scalar(None, pa.string()), text), pa.large_string())

    table = pa.table(arrays)
    problems = [p for p in problems if n and pc.any(p[1]).as_py()]
    if not problems:
        return TypedBatch(good=table)
    bad_mask = problems[0][1]
    for _, mask, _ in problems[1:]:
        bad_mask = pc.or_(bad_mask, mask)
    bad_rows = pc.indices_nonzero(bad_mask)
    # Only the bad rows' flags and values are converted to Python, whatever the batch size.
    found: list[list[str]] = [[] for _ in range(len(bad_rows))]
    for reason, mask, column in problems:
        hits = pc.take(mask, bad_rows).to_pylist()
        values = pc.take(batch.column(column), bad_rows).to_pylist() if column else [None] * len(hits)
        for i, (hit, value) in enumerate(zip(hits, values, strict=True)):
            if hit:
                found[i].append(f"{reason}: {value!r}" if column else reason)
    reasons = ["; ".join(f) for f in found]
    return TypedBatch(good=table.filter(pc.invert(bad_mask)), bad_rows=bad_rows.to_pylist(), reasons=reasons)
