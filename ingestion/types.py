"""The column types a declaration may use, each with its Arrow type and its Iceberg type.

Parsing casts text to the Arrow type and the table schema uses the Iceberg type,
so both come from one table. The ``ColumnType`` Literal in ``declarations.py``
repeats the names for pydantic and mypy (there, reading a declaration needs no
pyarrow); importing this module checks that the two agree.
"""

from __future__ import annotations

from typing import NamedTuple, get_args

import pyarrow as pa
from pyiceberg.types import (
    BooleanType,
    DateType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestamptzType,
)

from ingestion.declarations import ColumnType


class ColumnTypes(NamedTuple):
    """What one declared column type is in Arrow (validation) and in Iceberg (the table)."""

    arrow: pa.DataType
    iceberg: IcebergType


COLUMN_TYPES: dict[str, ColumnTypes] = {
    "string": ColumnTypes(pa.large_string(), StringType()),
    "int": ColumnTypes(pa.int32(), IntegerType()),
    "long": ColumnTypes(pa.int64(), LongType()),
    "double": ColumnTypes(pa.float64(), DoubleType()),
    "boolean": ColumnTypes(pa.bool_(), BooleanType()),
    "date": ColumnTypes(pa.date32(), DateType()),
    "timestamp": ColumnTypes(pa.timestamp("us", tz="UTC"), TimestamptzType()),
}

if set(COLUMN_TYPES) != set(get_args(ColumnType)):
    raise RuntimeError(
        f"ingestion.types: COLUMN_TYPES has {sorted(COLUMN_TYPES)} "
        f"but declarations.ColumnType has {sorted(get_args(ColumnType))}"
    )

ARROW_TYPES: dict[str, pa.DataType] = {name: types.arrow for name, types in COLUMN_TYPES.items()}
ICEBERG_TYPES: dict[str, IcebergType] = {name: types.iceberg for name, types in COLUMN_TYPES.items()}
