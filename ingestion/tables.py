"""The Iceberg table of a declared source: its schema and lineage columns, creation, schema drift."""

from __future__ import annotations

import logging
from datetime import datetime

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import MonthTransform
from pyiceberg.types import IcebergType, NestedField, StringType, TimestamptzType

from core.names import LINEAGE_COLUMNS
from ingestion.declarations import SourceDeclaration
from ingestion.landing import LandedFile
from ingestion.types import ICEBERG_TYPES

log = logging.getLogger(__name__)

# Type and doc of each lineage column, after the declared columns in the order of LINEAGE_COLUMNS.
_LINEAGE_FIELDS: dict[str, tuple[IcebergType, str]] = {
    "_source_file": (StringType(), "Landing URI of the raw file"),
    "_source_checksum": (StringType(), "SHA-256 of the raw file"),
    "_load_id": (StringType(), "The load that wrote the row"),
    "_loaded_at": (TimestamptzType(), "When that load ran (UTC)"),
}


def _table_schema(decl: SourceDeclaration) -> Schema:
    fields = [
        NestedField(i, c.name, ICEBERG_TYPES[c.type], required=False, doc=c.description or None)
        for i, c in enumerate(decl.columns, start=1)
    ]
    return Schema(*fields, *lineage_fields(len(fields) + 1))


def lineage_fields(start: int, docs: dict[str, str] | None = None) -> list[NestedField]:
    """The lineage columns every raw table ends with, numbered from ``start``; ``docs`` overrides their docs."""
    docs = {name: doc for name, (_, doc) in _LINEAGE_FIELDS.items()} | (docs or {})
    return [
        NestedField(start + i, name, _LINEAGE_FIELDS[name][0], required=False, doc=docs[name])
        for i, name in enumerate(LINEAGE_COLUMNS)
    ]


def empty_arrow_table(decl: SourceDeclaration) -> pa.Table:
    """No rows, with the columns (declared, then lineage) a loaded table of ``decl`` has.

    The warehouse publishes it for a declared source that has never been
    loaded (the prediction log before the API's first answer), so the models
    over it build, empty, instead of failing on a missing relation.
    """
    return _table_schema(decl).as_arrow().empty_table()


def lineage_values(landed_file: LandedFile, load_id: str, loaded_at: datetime) -> dict[str, pa.Scalar]:
    """The lineage columns' values for every row of one file, by column name."""
    # Typed like the table's columns, so repeating them needs no conversion per row.
    return {
        "_source_file": pa.scalar(landed_file.uri, pa.large_string()),
        "_source_checksum": pa.scalar(landed_file.sha256, pa.large_string()),
        "_load_id": pa.scalar(load_id, pa.large_string()),
        "_loaded_at": pa.scalar(loaded_at, pa.timestamp("us", tz="UTC")),
    }


def ensure_table(catalog: Catalog, identifier: str, decl: SourceDeclaration) -> Table:
    """The source's table, created from its declaration if it does not exist yet."""
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


def evolve_schema(table: Table, new_columns: list[str], files: str) -> Table:
    """Add undeclared source columns as nullable strings (schema drift)."""
    existing = {f.name for f in table.schema().fields}
    missing = [c for c in new_columns if c not in existing]
    if missing:
        with table.update_schema() as update:
            for name in missing:
                update.add_column(name, StringType(), doc=f"Added by schema drift from {files}")
        log.warning("schema drift: added %s to %s", ", ".join(missing), table.name())
    return table
