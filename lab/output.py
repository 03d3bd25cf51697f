"""What ``lab`` shows and where: results on stdout; progress and errors on stderr.

Commands render through these helpers only, so the width of piped output and
the look of an error line are decided here, once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.status import Status
from rich.table import Table

# Piped output (make demo, CI logs) gets a readable width instead of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=140)
err = Console(stderr=True)


def show(renderable: RenderableType) -> None:
    """A result: a table or a line (rich markup allowed) on stdout."""
    console.print(renderable)


def note(message: str) -> None:
    """A remark on what is happening, on stderr so it stays out of the results."""
    err.print(message)


def error(message: str) -> None:
    """The one red line a user-fixable failure prints."""
    err.print(f"[red]error:[/red] {message}")


def plain(line: str) -> None:
    """A line with no markup and no wrapping, for output a shell evaluates."""
    typer.echo(line)


def table(*columns: str, title: str | None = None) -> Table:
    """An empty result table; fill it with ``add_row`` and pass it to :func:`show`."""
    return Table(*columns, title=title)


def status(message: str) -> Status:
    """A spinner for a step with no row count, shown while the ``with`` block runs."""
    return console.status(message)


@contextmanager
def progress(label: str) -> Iterator[Callable[[int], None]]:
    """A live row counter on stderr (terminals only); yields the callback that advances it."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda rows: bar.update(task, completed=rows)
