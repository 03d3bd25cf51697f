"""The warehouse: ``lab build`` (publish the lake, run dbt) and ``lab docs`` (dbt's docs site)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab import output
from lab.context import Target, settings_for


def build_command(
    ctx: typer.Context,
    target: Target = None,
    month: Annotated[
        str | None, typer.Option("--month", "-m", help="Process one month (YYYY-MM) of the incremental models.")
    ] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild incremental models from scratch.")
    ] = False,
    select: Annotated[str | None, typer.Option("--select", "-s", help="dbt node selection.")] = None,
) -> None:
    """Publish the lake to the warehouse, run `dbt build` (models, tests, unit tests), publish the online features.

    The API serves only the features published here, after a build with every
    node passed: a failing build stops at `dbt build` and what the API loads stays as it was.
    """
    from core.months import month_index
    from warehouse.dbt import mart_relations, run_dbt
    from warehouse.online import NotPublished, current_version, publish_features
    from warehouse.publish import publish
    from warehouse.query import row_counts

    settings = settings_for(ctx, target)
    if month is not None:
        month_index(month)
    with output.status(f"publishing the lake to {settings.dbt_target}"):
        published = publish(settings)
    for raw in published:
        output.show(f"raw.{raw.name:<10} snapshot {raw.snapshot_id}  {raw.rows:>9,} rows")
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", select]
    result = run_dbt(settings, args, month=month)
    output.show(
        f"dbt build on {settings.dbt_target}: {result.count('model', 'success')} models, "
        f"{result.count('test', 'pass')} data tests, {result.count('unit_test', 'pass')} unit tests passed"
    )
    output.show(
        f"features as of {settings.prediction_horizon_minutes} min before scheduled departure "
        "(LAB_PREDICTION_HORIZON_MINUTES): only outcomes known by then count"
    )
    freshness = run_dbt(settings, ["source", "freshness"])
    output.show(f"source freshness: {freshness.count('source', 'pass')} sources fresh")
    table = output.table("mart", "rows", title=f"Marts on {settings.dbt_target}")
    for name, rows in row_counts(settings, mart_relations(settings)).items():
        table.add_row(name, f"{rows:,}")
    output.show(table)
    try:
        publication = publish_features(settings)
    except NotPublished as exc:
        if not select:
            raise
        # A partial build vouches only for what it selected.
        output.show(f"online features not published ({exc}); still current: {current_version(settings) or 'none'}")
        return
    done = "published" if publication.written else "already current (published from this build)"
    output.show(f"online features {publication.version} {done}: {publication.location}")


def docs_command(
    ctx: typer.Context,
    target: Target = None,
    port: Annotated[int, typer.Option(help="Port to serve the docs site on.")] = 8080,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the site after generating it.")] = True,
    screenshot: Annotated[
        Path | None, typer.Option(help="Also save a PNG of the lineage graph (headless Chromium).")
    ] = None,
) -> None:
    """Generate the dbt docs site (also as one static HTML file) and serve it locally."""
    from warehouse.dbt import run_dbt, target_dir
    from warehouse.docs import lineage_url, render

    settings = settings_for(ctx, target)
    run_dbt(settings, ["docs", "generate", "--static"])
    site = target_dir(settings)
    output.show(f"static site (one file): {site / 'static_index.html'}")
    if screenshot is not None:
        render(lineage_url(site / "static_index.html", "model.lab.training_flights"), screenshot)
        output.show(f"lineage graph saved to {screenshot}")
    if serve:
        _serve_folder(site, port)


def _serve_folder(site: Path, port: int) -> None:
    """Serve a folder over HTTP on localhost until Ctrl-C."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        output.show(f"serving the docs at http://127.0.0.1:{port}/  (Ctrl-C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            output.show("stopped")
