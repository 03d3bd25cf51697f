"""The one order-independent checksum of a table's rows, for lineage and for comparing builds.

Each row is hashed (pandas' vectorised row hash) and the hashes are summed
modulo 2**64: row order does not matter, and unlike XOR a duplicated row does.
Values are normalised first so that the same rows read from DuckDB or from
Postgres agree: integers as int64, floats optionally rounded, instants in UTC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa


def checksum(
    data: pd.DataFrame | pa.Table,
    *,
    exclude: Iterable[str] = (),
    float_digits: int | None = None,
) -> str:
    """``<row-hash sum>-<column-names hash>-<rows>`` of ``data`` without the ``exclude`` columns.

    Args:
        data: the rows (pandas or Arrow).
        exclude: columns to leave out (e.g. per-load lineage such as ``_load_id``).
        float_digits: round floats to this many decimals first, so engines that
            differ in the last bits of an average still agree.
    """
    frame = data.to_pandas() if isinstance(data, pa.Table) else data
    skip = set(exclude)
    frame = frame[sorted(c for c in frame.columns if c not in skip)]
    normalised = pd.DataFrame({name: _normalise(frame[name], float_digits) for name in frame.columns})
    row_hashes = pd.util.hash_pandas_object(normalised, index=False).to_numpy(dtype=np.uint64)
    total = int(row_hashes.sum(dtype=np.uint64))  # wraps mod 2**64
    columns = hashlib.sha256(",".join(frame.columns).encode()).hexdigest()[:8]
    return f"{total:016x}-{columns}-{len(frame)}"


def _normalise(column: pd.Series, float_digits: int | None) -> pd.Series:
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").dt.tz_localize(None)
    if pd.api.types.is_bool_dtype(dtype):
        return column
    if pd.api.types.is_integer_dtype(dtype):
        return column.astype("int64")
    if pd.api.types.is_float_dtype(dtype):
        column = column.astype("float64")
        return column.round(float_digits) if float_digits is not None else column
    return column
