"""``lab``: the one command line in front of every job of the platform.

Exit codes: 0 success; 1 an unexpected failure (a bug: traceback shown);
2 a problem with the input or configuration (one line, no traceback);
3 a data-quality gate refused the data (one line, nothing written).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab.settings import Settings, get_settings

app = typer.Typer(help="The data platform lab: land, model, train, serve.", no_args_is_help=True)
lake = typer.Typer(help="Inspect the Iceberg lake.", no_args_is_help=True)
app.add_typer(lake, name="lake")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_QUALITY_GATE = 3


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors a user can fix into one red line and a meaningful exit code."""
    from ingestion.errors import BadRowsError, LabError

    try:
        yield
    except BadRowsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_QUALITY_GATE) from None
    except LabError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_USER_ERROR) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        err.print(f"[red]error:[/red] configuration {where}: {first['msg']}")
        raise typer.Exit(EXIT_USER_ERROR) from None


def _settings() -> Settings:
    with _user_errors():
        return get_settings()
    raise AssertionError("unreachable")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens underneath.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command("sources")
def list_sources() -> None:
    """List the declared sources (bundled and your own)."""
    from ingestion.declarations import load_declarations

    settings = _settings()
    with _user_errors():
        decls = load_declarations(settings.sources_dirs)
    table = Table("source", "table", "format", "mode", "partition", "primary key", "declared in")
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
    console.print(table)


@app.command()
def ingest(
    sources: Annotated[list[str] | None, typer.Argument(help="Sources to load (default: all declared).")] = None,
    partition: Annotated[
        str | None, typer.Option("--partition", "-p", help="Load one month, YYYY-MM, of partitioned sources.")
    ] = None,
) -> None:
    """Land raw files in the object store and load them into Iceberg tables."""
    from ingestion.declarations import load_declarations
    from ingestion.errors import LabError
    from ingestion.loader import ingest as run_ingest

    settings = _settings()
    with _user_errors():
        decls = load_declarations(settings.sources_dirs)
        names = sources or list(decls)
        unknown = [n for n in names if n not in decls]
        if unknown:
            raise LabError(f"unknown source {', '.join(unknown)}; declared: {', '.join(decls)}")
        chosen = [decls[n] for n in names]
        if partition is not None:
            # A month applies to partitioned sources; keyed ones are reloaded whole.
            skipped = [d.name for d in chosen if d.partition is None and sources]
            if skipped:
                raise LabError(f"--partition applies to partitioned sources only, not {', '.join(skipped)}")
        summary = Table("source", "table", "partition", "rows in", "loaded", "quarantined", "snapshot", "new columns")
        for decl in chosen:
            month = partition if decl.partition is not None else None
            with _progress(f"{decl.name}{' ' + month if month else ''}") as advance:
                result = run_ingest(decl, settings, partition=month, progress=advance)
            summary.add_row(
                result.source,
                result.table,
                result.partition or "all",
                f"{result.rows_in:,}",
                f"{result.rows_loaded:,}",
                f"{result.rows_quarantined:,}",
                str(result.snapshot_id),
                ", ".join(result.new_columns) or "-",
            )
    console.print(summary)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int], None]]:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda rows: progress.update(task, completed=rows)


@lake.command("status")
def lake_status() -> None:
    """Every table with its rows, partitions, snapshots and last load."""
    from ingestion.status import lake_status as collect
    from ingestion.storage import open_catalog

    settings = _settings()
    with _user_errors():
        rows = collect(open_catalog(settings), settings)
    table = Table("table", "rows", "partitions", "snapshots", "last load", "loaded at (UTC)", title="Iceberg lake")
    for row in rows:
        table.add_row(
            row.name,
            f"{row.rows:,}",
            str(row.partitions),
            str(row.snapshots),
            row.last_load_id or "-",
            f"{row.last_loaded_at:%Y-%m-%d %H:%M:%S}" if row.last_loaded_at else "-",
        )
    console.print(table)
    if not rows:
        console.print("The lake is empty: run [bold]lab ingest[/bold].")


@lake.command("quarantine")
def lake_quarantine(
    table: Annotated[str | None, typer.Argument(help="Only this table (e.g. flights).")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many rows (0 = all).")] = 50,
) -> None:
    """List quarantined rows: their file, line, reason and raw text."""
    from ingestion.status import quarantined_rows
    from ingestion.storage import open_catalog

    settings = _settings()
    with _user_errors():
        data = quarantined_rows(open_catalog(settings), settings, table, limit)
    out = Table("table", "file", "line", "reason", "raw text", title="Quarantined rows")
    for row in data.to_pylist():
        out.add_row(
            row["table_name"],
            str(row.get("source_file", "")).rsplit("/", 1)[-1],
            str(row["line"]),
            row["reason"],
            row["raw_text"],
        )
    console.print(out)
    console.print(f"{data.num_rows} row(s) shown.")


if __name__ == "__main__":
    app()
