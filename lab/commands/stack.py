"""``lab stack``: the full stack of compose.yaml as supervised processes on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from core.errors import LabError
from lab import output
from lab.context import settings_for


def _stack(ctx: typer.Context):  # type: ignore[no-untyped-def]
    from stack.runtime import Stack

    return Stack(settings_for(ctx))


def up_command(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None, typer.Argument(help="Only these services and what they need (default: all).")
    ] = None,
) -> None:
    """Start every service in compose's order, each once what it depends on is healthy."""
    from stack import lifecycle
    from stack.services import by_name

    stack = _stack(ctx)
    for name in services or []:
        try:
            by_name(name)
        except KeyError:
            raise typer.BadParameter(f"no service {name!r} in the stack", param_hint="SERVICES") from None

    def show(step: lifecycle.Step) -> None:
        output.note(f"  {step.service:<22} {step.how:<13} {step.seconds:5.1f} s")

    output.note(f"starting the stack under {stack.root}")
    lifecycle.up(stack, progress=show, services=services)
    _status_table(stack)


def down_command(
    ctx: typer.Context,
    volumes: Annotated[
        bool, typer.Option("--volumes", "-v", help="Also drop the stack's databases and folder (a fresh start).")
    ] = False,
) -> None:
    """Stop every supervised service, then the supervisor.

    Postgres keeps its databases and SeaweedFS its objects on disk, so the next `up` has the
    lake, the published features and MLflow's artifacts. --volumes wipes them all.
    """
    from stack import lifecycle

    lifecycle.down(_stack(ctx), volumes=volumes)
    output.note("stack stopped" + (", its databases and folder removed" if volumes else ""))


def status_command(ctx: typer.Context) -> None:
    """Each service: its processes and its health check."""
    _status_table(_stack(ctx))


def _status_table(stack) -> None:  # type: ignore[no-untyped-def]
    from stack import lifecycle
    from stack.services import by_name

    table = output.table("service", "processes", "health", "note", title="stack")
    for row in lifecycle.status(stack):
        colour = "green" if row.health in {"healthy", "-"} else "red"
        table.add_row(row.service, row.processes, f"[{colour}]{row.health}[/{colour}]", by_name(row.service).note)
    output.show(table)


def logs_command(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="A service of the stack, e.g. airflow-worker.")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many of the last lines.")] = 40,
) -> None:
    """The last lines a supervised service wrote (every replica's)."""
    stack = _stack(ctx)
    files = sorted(stack.logs.glob(f"{service}*.log"))
    if not files:
        raise LabError(f"no log for {service!r} under {stack.logs}")
    for path in files:
        output.plain(f"==> {path.name} <==")
        for line in path.read_text(errors="replace").splitlines()[-lines:]:
            output.plain(line)


def run_command(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="Whose environment: lab (the tools), ingest, api, airflow-worker ...")],
    command: Annotated[list[str], typer.Argument(help="The command, after --.")],
) -> None:
    """Run a command as a service of the stack, like `docker compose run --rm <service> <command>`."""
    from stack.lifecycle import run_service
    from stack.services import by_name

    try:
        by_name(service)
    except KeyError:
        raise LabError(f"{service!r} is not a service of the stack") from None
    code = run_service(_stack(ctx), service, command, check=False)
    raise typer.Exit(code)


def exec_command(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument()],
    replica: Annotated[int, typer.Option()] = 1,
) -> None:
    """(The supervisor's program command.) Become the service: its environment, then its command."""
    from stack.lifecycle import exec_service

    exec_service(_stack(ctx), service, replica)


def backfill_command(
    ctx: typer.Context,
    first: Annotated[str, typer.Option("--from", help="First month, YYYY-MM.")],
    last: Annotated[str, typer.Option("--to", help="Last month, YYYY-MM.")],
    dag_id: Annotated[str, typer.Option("--dag", help="The DAG.")] = "flights_monthly",
) -> None:
    """Backfill months through the stack's scheduler; its Celery workers run every task."""
    from collections import Counter

    from core.months import month_index, month_start
    from stack import jobs

    stack = _stack(ctx)
    start, end = month_index(first), month_index(last)
    if end < start:
        raise LabError(f"--to {last} is before --from {first}")
    months = end - start + 1
    # Monthly runs' logical dates are the first of each month.
    jobs.start_backfill(stack, dag_id, month_start(start), month_start(end))
    with output.status(f"{dag_id}: {months} month(s) through the scheduler"):
        runs = jobs.wait_for_backfill(stack, dag_id, months)
    hosts = Counter(run.hostname for run in jobs.task_runs(stack, dag_id) if run.hostname)
    table = output.table("run", "state", title=dag_id)
    for run_id, state in sorted(runs.items()):
        table.add_row(run_id, state)
    output.show(table)
    output.show("tasks per worker: " + ", ".join(f"{host} {count}" for host, count in sorted(hosts.items())))
