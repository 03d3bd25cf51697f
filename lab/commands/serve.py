"""The API: ``lab serve`` runs it; ``lab api-demo`` starts it, asks it about real flights and stops it."""

from __future__ import annotations

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
    target: Target = None,
) -> None:
    """Serve the champion over HTTP (FastAPI + uvicorn); OpenAPI docs at /docs."""
    import uvicorn

    from serving.app import create_app

    settings = settings_for(ctx, target)
    uvicorn.run(
        create_app(settings),
        host=host or settings.serve_host,
        port=port or settings.serve_port,
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

    from serving.examples import real_flight_requests
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
    output.show(_answers_table(f"POST {url}/predict", flights, answers))
    output.show("API stopped (SIGTERM); every answer is in the prediction log.")


def _answers_table(title: str, flights: list[dict[str, Any]], answers: list[dict[str, Any]]) -> Table:
    """Each flight beside the API's answer and what really happened."""
    table = output.table(
        "flight", "route", "scheduled (local)", "P(late > 15 min)", "predicted", "actual delay", "model", title=title
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
