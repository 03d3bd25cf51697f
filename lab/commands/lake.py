"""Sources and the Iceberg lake: ``lab sources``, ``lab ingest``, ``lab lake status|quarantine``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from core.errors import LabError
from lab import output
from lab.context import settings_for

if TYPE_CHECKING:
    from ingestion.declarations import SourceDeclaration


def sources_command(ctx: typer.Context) -> None:
    """List the declared sources (bundled and your own)."""
    from ingestion.declarations import load_declarations

    settings = settings_for(ctx)
    decls = load_declarations(settings.sources_dirs)
    table = output.table("source", "table", "format", "mode", "partition", "primary key", "declared in")
    for decl in decls.values():
        table.add_row(
            decl.name,
            decl.table_name(settings.raw_namespace),
            decl.format,
            decl.mode,
            f"month({decl.partition.column})" if decl.partition else "-",
            ", ".join(decl.primary_key) or "-",
            str(decl.origin),
        )
    output.show(table)


def ingest_command(
    ctx: typer.Context,
    sources: Annotated[list[str] | None, typer.Argument(help="Sources to load (default: all declared).")] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", "-p", help="Load one month, YYYY-MM, of partitioned sources.")
    ] = None,
) -> None:
    """Land raw files in the object store and load them into Iceberg tables."""
    from ingestion.declarations import load_declarations
    from ingestion.loader import ingest

    settings = settings_for(ctx)
    chosen = _chosen(load_declarations(settings.sources_dirs), sources, partition)
    summary = output.table(
        "source", "table", "partition", "rows in", "loaded", "quarantined", "snapshot", "new columns"
    )
    for decl in chosen:
        month = partition if decl.partition is not None else None
        with output.progress(f"{decl.name}{' ' + month if month else ''}") as advance:
            result = ingest(decl, settings, partition=month, progress=advance)
        summary.add_row(
            result.source,
            result.table,
            result.partition or "all",
            f"{result.rows_in:,}",
            f"{result.rows_loaded:,}",
            f"{result.rows_quarantined:,}",
            "-" if result.snapshot_id is None else str(result.snapshot_id),
            ", ".join(result.new_columns) or "-",
        )
        if decl.input.prediction_log and result.rows_in == 0:
            output.note(f"{decl.name}: the prediction log holds no predictions{' for ' + month if month else ''} yet")
    output.show(summary)


def _chosen(
    decls: dict[str, SourceDeclaration], sources: list[str] | None, partition: str | None
) -> list[SourceDeclaration]:
    """The declarations to load: those named (default: all), checked before anything loads."""
    names = sources or list(decls)
    unknown = [n for n in names if n not in decls]
    if unknown:
        raise LabError(f"unknown source {', '.join(unknown)}; declared: {', '.join(decls)}")
    chosen = [decls[n] for n in names]
    if partition is not None and sources:
        # A month applies to partitioned sources; keyed ones are reloaded whole,
        # so naming a keyed source together with a month is a mistake.
        skipped = [d.name for d in chosen if d.partition is None]
        if skipped:
            raise LabError(f"--partition applies to partitioned sources only, not {', '.join(skipped)}")
    return chosen


def lake_status_command(ctx: typer.Context) -> None:
    """Every table with its rows, partitions, snapshots and last load."""
    from ingestion.status import lake_status
    from ingestion.storage import open_catalog

    settings = settings_for(ctx)
    rows = lake_status(open_catalog(settings), settings)
    table = output.table(
        "table", "rows", "partitions", "snapshots", "last load", "loaded at (UTC)", title="Iceberg lake"
    )
    for row in rows:
        table.add_row(
            row.name,
            f"{row.rows:,}",
            str(row.partitions),
            str(row.snapshots),
            row.last_load_id or "-",
            f"{row.last_loaded_at:%Y-%m-%d %H:%M:%S}" if row.last_loaded_at else "-",
        )
    output.show(table)
    if not rows:
        output.show("The lake is empty: run [bold]lab ingest[/bold].")


def lake_quarantine_command(
    ctx: typer.Context,
    table: Annotated[str | None, typer.Argument(help="Only this table (e.g. flights).")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many rows (0 = all).")] = 50,
) -> None:
    """List quarantined rows: their file, line, reason and raw text."""
    from ingestion.status import quarantined_rows
    from ingestion.storage import open_catalog

    settings = settings_for(ctx)
    data = quarantined_rows(open_catalog(settings), settings, table, limit)
    out = output.table("table", "file", "line", "reason", "raw text", title="Quarantined rows")
    for row in data.to_pylist():
        out.add_row(
            row["table_name"],
            str(row.get("source_file", "")).rsplit("/", 1)[-1],
            str(row["line"]),
            row["reason"],
            row["raw_text"],
        )
    output.show(out)
    output.show(f"{data.num_rows} row(s) shown.")
