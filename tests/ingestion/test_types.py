"""The one table of column types: its Arrow and Iceberg halves describe the same values."""

from __future__ import annotations

from typing import get_args

import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField

from ingestion.declarations import ColumnType
from ingestion.types import COLUMN_TYPES


def test_every_declared_type_has_an_arrow_and_an_iceberg_type() -> None:
    assert set(COLUMN_TYPES) == set(get_args(ColumnType))


@pytest.mark.parametrize("name", sorted(COLUMN_TYPES))
def test_arrow_type_is_what_pyiceberg_makes_of_the_iceberg_type(name: str) -> None:
    """Parsed batches are cast to the table's Arrow schema; a mismatch would convert every value."""
    types = COLUMN_TYPES[name]
    schema = Schema(NestedField(1, "value", types.iceberg, required=False))
    assert schema.as_arrow().field("value").type == types.arrow
