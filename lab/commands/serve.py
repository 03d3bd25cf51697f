"""The API: ``lab serve`` runs it; ``lab api-demo`` and ``lab replay`` send it real flights over HTTP."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.errors import LabError
from lab import output
from lab.context import Target, settings_for

if TYPE_CHECKING:
    from rich.table import Table


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: LAB_SERVE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: LAB_SERVE_PORT).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=32, help="Worker processes, each with the model (default: LAB_SERVE_WORKERS)."),
    ] = None,
    target: Target = None,
) -> None:
    """Serve the champion over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs."""
    import os

    import uvicorn

    from serving.app import create_app

    settings = settings_for(ctx, target)
    bind = {"host": host or settings.serve_host, "port": port or settings.serve_port}
    workers = workers or settings.serve_workers
    if workers == 1:
        uvicorn.run(create_app(settings), **bind, log_level="info", timeout_graceful_shutdown=10)  # type: ignore[arg-type]
        return
    # Worker processes build their own app from the environment: pass --target on through it.
    # They share the prediction log's spool folder; each appends to its own segment.
    os.environ["LAB_DBT_TARGET"] = settings.dbt_target
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        workers=workers,
        **bind,  # type: ignore[arg-type]
        log_level="info",
        timeout_graceful_shutdown=10,
    )


def api_demo_command(
    ctx: typer.Context,
    day: Annotated[str, typer.Option(help="Take the flights of this 2013 day (YYYY-MM-DD).")] = "2013-12-20",
    count: Annotated[int, typer.Option(min=1, max=50, help="How many flights to ask about.")] = 5,
    target: Target = None,
) -> None:
    """Start the API, ask it about real flights over HTTP, print the answers, stop it."""
    import httpx

    from lab.traffic.examples import real_flight_requests
    from serving.process import api_server

    settings = settings_for(ctx, target)
    flights = real_flight_requests(settings, count, day)
    if not flights:
        raise LabError(f"no operated flights on {day} in the {settings.dbt_target} warehouse")
    with output.status("starting the API"), api_server(settings) as (url, _):
        answers = [
            httpx.post(f"{url}/predict", json={k: v for k, v in f.items() if k != "departure_delay_minutes"}).json()
            for f in flights
        ]
    output.show(_answers_table(f"POST {url}/predict", flights, answers, settings.late_departure_minutes))
    output.show("API stopped (SIGTERM); every answer is in the prediction log.")


def replay_command(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="First month to replay (YYYY-MM).")],
    end: Annotated[str, typer.Option("--to", help="Last month to replay (YYYY-MM), inclusive.")],
    rate: Annotated[
        float | None, typer.Option(min=0.1, help="At most this many flights per second (default: as fast as answered).")
    ] = None,
    batch: Annotated[
        int, typer.Option(min=1, max=1000, help="Flights per request: 1 = POST /predict, more = /predict/batch.")
    ] = 1,
    start_api: Annotated[
        bool, typer.Option("--start-api", help="Start the API for the replay and stop it after (SIGTERM).")
    ] = False,
    target: Target = None,
) -> None:
    """Send a past period's real scheduled flights through the API over HTTP, in schedule order."""
    from contextlib import nullcontext

    from lab.traffic.examples import scheduled_flight_requests
    from lab.traffic.replay import replay
    from serving.process import api_server

    settings = settings_for(ctx, target)
    first, last = _month(start, "--from"), _month(end, "--to")
    if first > last:
        raise LabError(f"--from {start} is after --to {end}")
    last_day = (last.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)  # the month's end
    flights = scheduled_flight_requests(settings, first, last_day)
    if not flights:
        raise LabError(f"no flights scheduled from {start} to {end} in the {settings.dbt_target} warehouse")
    output.note(f"{len(flights):,} scheduled flights, {first}..{last_day}, in schedule order")
    running = f"http://{settings.serve_host}:{settings.serve_port}"
    server = api_server(settings) if start_api else nullcontext((running, None))
    with server as (url, _), output.progress("replaying") as advance:
        result = replay(url, flights, batch=batch, rate=rate, progress=advance)
    output.show(
        f"replayed {result.flights:,} flights to {url} in {result.seconds:.1f} s"
        f" ({result.flights / max(result.seconds, 1e-9):,.0f} flights/s): {result.answered:,} answered"
    )
    for status, count in sorted(result.refused.items()):
        output.show(f"  [yellow]{count:,} refused with {status}[/yellow]")
    if result.first_refusal:
        output.show(f"  first refusal: {result.first_refusal}")
    output.show("every answer is in the API's prediction log" + (" (API stopped, log flushed)" if start_api else ""))


def _month(text: str, option: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise LabError(f"{option} {text!r} is not a month (YYYY-MM)") from None


def _answers_table(
    title: str, flights: list[dict[str, Any]], answers: list[dict[str, Any]], late_minutes: int
) -> Table:
    """Each flight beside the API's answer (late: by more than ``late_minutes``) and what really happened."""
    table = output.table(
        "flight",
        "route",
        "scheduled (local)",
        f"P(late > {late_minutes} min)",
        "predicted",
        "actual delay",
        "model",
        title=title,
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
    return table
