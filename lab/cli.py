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
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.settings import Settings, get_settings

app = typer.Typer(help="The data platform lab: land, model, train, serve.", no_args_is_help=True)
lake = typer.Typer(help="Inspect the Iceberg lake.", no_args_is_help=True)
app.add_typer(lake, name="lake")

# Piped output (make demo, CI logs) gets a readable width instead of 80 columns.
console = Console() if sys.stdout.isatty() else Console(width=140)
err = Console(stderr=True)
T = TypeVar("T")

EXIT_USER_ERROR = 2
EXIT_QUALITY_GATE = 3


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn errors a user can fix into one red line and a meaningful exit code."""
    from core.errors import BadRowsError, LabError

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
    from core.errors import LabError
    from ingestion.declarations import load_declarations
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


Target = Annotated[
    str | None,
    typer.Option("--target", "-t", help="dbt target: duckdb (embedded) or postgres. Default: LAB_DBT_TARGET."),
]


def _with_target(settings: Settings, target: str | None) -> Settings:
    from core.errors import LabError

    if target is None:
        return settings
    if target not in {"duckdb", "postgres"}:
        raise LabError(f"--target must be duckdb or postgres, not {target!r}")
    return settings.model_copy(update={"dbt_target": target})


@app.command()
def build(
    target: Target = None,
    month: Annotated[
        str | None, typer.Option("--month", "-m", help="Process one month (YYYY-MM) of the incremental models.")
    ] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")
    ] = False,
    select: Annotated[str | None, typer.Option("--select", "-s", help="dbt node selection.")] = None,
) -> None:
    """Publish the lake to the warehouse and run `dbt build` (models, tests, unit tests)."""
    from core.months import month_index
    from warehouse.dbt import build_vars, mart_relations, run_dbt
    from warehouse.publish import publish
    from warehouse.query import row_counts

    with _user_errors():
        settings = _with_target(_settings(), target)
        if month is not None:
            month_index(month)
        with console.status(f"publishing the lake to {settings.dbt_target}"):
            published = publish(settings)
        for raw in published:
            console.print(f"raw.{raw.name:<10} snapshot {raw.snapshot_id}  {raw.rows:>9,} rows")
        args = ["build", *build_vars(month)]
        if full_refresh:
            args.append("--full-refresh")
        if select:
            args += ["--select", select]
        result = run_dbt(settings, args)
        console.print(
            f"dbt build on {settings.dbt_target}: {result.count('model', 'success')} models, "
            f"{result.count('test', 'pass')} data tests, {result.count('unit_test', 'pass')} unit tests passed"
        )
        freshness = run_dbt(settings, ["source", "freshness"])
        console.print(f"source freshness: {freshness.count('source', 'pass')} sources fresh")
        counts = row_counts(settings, mart_relations(settings))
    table = Table("mart", "rows", title=f"Marts on {settings.dbt_target}")
    for name, rows in counts.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)


@app.command()
def docs(
    target: Target = None,
    port: Annotated[int, typer.Option(help="Port to serve the docs site on.")] = 8080,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the site after generating it.")] = True,
    screenshot: Annotated[
        Path | None, typer.Option(help="Also save a PNG of the lineage graph (headless Chromium).")
    ] = None,
) -> None:
    """Generate the dbt docs site (also as one static HTML file) and serve it locally."""
    import functools
    import http.server

    from warehouse.dbt import run_dbt, target_dir
    from warehouse.docs import lineage_url, render

    with _user_errors():
        settings = _with_target(_settings(), target)
        run_dbt(settings, ["docs", "generate", "--static"])
        site = target_dir(settings)
        console.print(f"static site (one file): {site / 'static_index.html'}")
        if screenshot is not None:
            render(lineage_url(site / "static_index.html", "model.lab.training_flights"), screenshot)
            console.print(f"lineage graph saved to {screenshot}")
    if not serve:
        return
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        console.print(f"serving the docs at http://127.0.0.1:{port}/  (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("stopped")


@app.command()
def train(
    target: Target = None,
    model: Annotated[str, typer.Option(help="gbm (gradient boosting) or baseline (logistic regression).")] = "gbm",
) -> None:
    """Train on the training mart, log the run to MLflow and register the model as challenger."""
    from core.errors import LabError
    from ml.train import train as run_train

    with _user_errors():
        settings = _with_target(_settings(), target)
        if model not in {"gbm", "baseline"}:
            raise LabError(f"--model must be gbm or baseline, not {model!r}")
        with console.status(f"training {model} on the {settings.dbt_target} training mart"):
            result = run_train(settings, model)  # type: ignore[arg-type]
    table = Table("metric", "held-out months", title=f"{settings.model_name} v{result.model_version} (challenger)")
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "baseline_roc_auc", "baseline_pr_auc"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4f}")
    console.print(table)
    console.print(f"run {result.run_id} · {result.rows:,} rows · training-set checksum {result.checksum}")


@app.command()
def promote(
    target: Target = None,
    version: Annotated[str | None, typer.Option(help="Model version to gate (default: the challenger).")] = None,
) -> None:
    """Make the challenger champion only if it beats the champion on the same held-out months."""
    from ml.registry import promote as run_promote

    with _user_errors():
        settings = _with_target(_settings(), target)
        decision = run_promote(settings, version)
    verdict = "[green]promoted[/green]" if decision.promoted else "[yellow]not promoted[/yellow]"
    console.print(f"v{decision.challenger_version} {verdict}: {decision.reason}")


@app.command()
def champion(target: Target = None) -> None:
    """Show the served model: version, held-out metrics and lineage."""
    from ml.registry import champion_summary

    with _user_errors():
        settings = _with_target(_settings(), target)
        summary = champion_summary(settings)
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    table = Table("metric", "held-out months", title=f"champion: {summary['name']} v{summary['version']}")
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "baseline_roc_auc"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4f}")
    console.print(table)
    lineage = summary["lineage"]
    assert isinstance(lineage, dict)
    for key in sorted(k for k in lineage if k.startswith("lab.snapshot.") or k == "mlflow.source.git.commit"):
        console.print(f"{key:<28} {lineage[key]}")


@app.command()
def reproduce(run_id: Annotated[str, typer.Argument(help="The MLflow run to rebuild.")]) -> None:
    """Rebuild a run's training set from its recorded Iceberg snapshots and check it matches."""
    from ml.reproduce import reproduce as run_reproduce

    with _user_errors(), console.status("rebuilding the training set at the recorded snapshots"):
        result = run_reproduce(_settings(), run_id)
    for name, snapshot in result.snapshots.items():
        console.print(f"raw.{name:<10} snapshot {snapshot}")
    console.print(f"training-set checksum  recorded {result.recorded_checksum}")
    console.print(f"                       rebuilt  {result.rebuilt_checksum}")
    for key, value in result.rebuilt_metrics.items():
        console.print(f"{key:<22} recorded {result.recorded_metrics[key]:.6f}  rebuilt {value:.6f}")
    if not result.matches:
        err.print("[red]error:[/red] the rebuilt training set does not match the run")
        raise typer.Exit(1)
    console.print("[green]reproduced: identical training set and metrics[/green]")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: LAB_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: LAB_SERVE_PORT).")] = None,
    target: Target = None,
) -> None:
    """Serve the champion over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs."""
    import uvicorn

    from serving.app import create_app

    with _user_errors():
        settings = _with_target(_settings(), target)
        uvicorn.run(
            create_app(settings),
            host=host or settings.serve_host,
            port=port or settings.serve_port,
            log_level="info",
            timeout_graceful_shutdown=10,
        )


@app.command("airflow")
def airflow_standalone(
    port: Annotated[int | None, typer.Option(help="Port of the Airflow UI (default: LAB_AIRFLOW_PORT).")] = None,
) -> None:
    """Start Airflow standalone with the project's DAGs on this home; Ctrl-C stops it."""
    import time

    from orchestration import airflow as af

    with _user_errors():
        settings = _settings()
        if port is not None:
            settings = settings.model_copy(update={"airflow_port": port})
        err.print(f"starting Airflow in {settings.airflow_home} (about a minute)")
        with af.standalone(settings) as url:
            console.print(f"Airflow UI   {url}")
            console.print(f"login        {af.ADMIN_USER} / {af.admin_password(settings)}")
            console.print(
                "DAGs         flights_monthly (ingest -> publish -> one task per dbt model -> marts asset)\n"
                "             train_and_promote (runs when the marts asset updates: train -> promote -> refresh API)\n"
                "backfill     airflow backfill create --dag-id flights_monthly "
                "--from-date 2013-01-01 --to-date 2013-03-01\n"
                "             (in another shell, after `eval $(lab airflow-env)`)"
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                err.print("stopping Airflow")


@app.command("airflow-test")
def airflow_test(
    month: Annotated[
        str, typer.Option("--month", "-m", help="The month (YYYY-MM) the pipeline run processes.")
    ] = "2013-12",
) -> None:
    """Run the month through Airflow (`airflow dags test` of both DAGs, every task executed) and show each task."""
    from datetime import datetime

    from core.months import month_index
    from orchestration import airflow as af

    with _user_errors():
        settings = _settings()
        month_index(month)
        with console.status("preparing Airflow (metadata DB, pool, DAGs)"):
            af.prepare(settings)
        for dag_id, logical_date in (("flights_monthly", f"{month}-01"), ("train_and_promote", None)):
            with console.status(f"airflow dags test {dag_id} {logical_date or ''}"):
                af.dags_test(settings, dag_id, logical_date)
            table = Table("task", "state", "seconds", title=f"{dag_id} {logical_date or '(marts asset)'}")
            for row in af.task_runs(settings, dag_id):
                start, end = row["start_date"], row["end_date"]
                seconds = (
                    (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
                    if start and end
                    else 0
                )
                table.add_row(row["task_id"], row["state"], f"{seconds:.1f}")
            console.print(table)
        console.print(_latest_promotion(settings))


def _latest_promotion(settings: Settings) -> str:
    """One line on what the promotion gate decided for the newest model version."""
    import mlflow

    from core.names import TAG_PROMOTION_DECISION, TAG_PROMOTION_REASON
    from ml.tracking import configure_mlflow

    configure_mlflow(settings)
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{settings.model_name}'")
    newest = max(versions, key=lambda v: int(v.version))
    tags = newest.tags
    return (
        f"promotion gate: v{newest.version} {tags.get(TAG_PROMOTION_DECISION, 'undecided')}"
        f" ({tags.get(TAG_PROMOTION_REASON, 'no decision recorded')})"
    )


@app.command("airflow-env")
def airflow_env() -> None:
    """Print `export` lines that point the `airflow` CLI at this home (use with eval)."""
    import shlex

    from orchestration import airflow as af

    with _user_errors():
        settings = _settings()
        for key, value in af.env(settings).items():
            if key.startswith(("AIRFLOW", "LAB_")) or key == "PATH":
                typer.echo(f"export {key}={shlex.quote(value)}")


@app.command("api-demo")
def api_demo(
    day: Annotated[str, typer.Option(help="Take the flights of this 2013 day (YYYY-MM-DD).")] = "2013-12-20",
    count: Annotated[int, typer.Option(min=1, max=50, help="How many flights to ask about.")] = 5,
    target: Target = None,
) -> None:
    """Start the API, ask it about real flights over HTTP, print the answers, stop it."""
    import httpx

    from serving.examples import real_flight_requests
    from serving.process import api_server

    with _user_errors():
        settings = _with_target(_settings(), target)
        flights = real_flight_requests(settings, count, day)
        if not flights:
            from core.errors import LabError

            raise LabError(f"no operated flights on {day} in the {settings.dbt_target} warehouse")
        with console.status("starting the API"), api_server(settings) as (url, _):
            answers = [
                httpx.post(f"{url}/predict", json={k: v for k, v in f.items() if k != "departure_delay_minutes"}).json()
                for f in flights
            ]
    table = Table(
        "flight",
        "route",
        "scheduled (local)",
        "P(late > 15 min)",
        "predicted",
        "actual delay",
        "model",
        title=f"POST {url}/predict",
    )
    for flight, answer in zip(flights, answers, strict=True):
        table.add_row(
            f"{flight['carrier']}{flight['flight']} {flight['tailnum'] or ''}",
            f"{flight['origin']}→{flight['dest']}",
            flight["scheduled_departure"].replace("T", " "),
            f"{answer['probability']:.3f}",
            "late" if answer["is_delayed"] else "on time",
            f"{flight['departure_delay_minutes']:+.0f} min",
            f"v{answer['model']['version']}",
        )
    console.print(table)
    console.print("API stopped (SIGTERM); every answer is in the prediction log.")


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
