"""The flight event stream: ``lab stream sink`` writes it into the lake; ``lab stream replay`` feeds it real 2013 days.

SIMULATED FAULT, for the fault test only: with ``LAB_SINK_SIMULATED_CRASH=after-commit``
in its environment the sink kills itself with SIGKILL right after its first commit and
before acknowledging it, the one moment a crash could write a batch twice
(tests/ingestion/test_event_sink.py proves it does not). It is read here, not in the
settings, so no deployment's configuration can carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from core.errors import LabError
from lab import output
from lab.context import settings_for

if TYPE_CHECKING:
    from ingestion.event_sink import SinkReport
    from lab.traffic.stream_replay import StreamReplayResult

SIMULATED_CRASH_VARIABLE = "LAB_SINK_SIMULATED_CRASH"
SIMULATED_CRASHES = ("after-commit",)


def sink_command(ctx: typer.Context) -> None:
    """Write the flight events of the stream into raw.flight_events, exactly once, until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from ingestion.event_sink import run_sink
    from ingestion.event_stream import connect, stream_uri

    settings = settings_for(ctx)
    crash = _simulated_crash()
    connect(settings.stream_redis_url).close()  # no Redis: the one error line, before anything else is said
    output.note(
        f"sink: {stream_uri(settings.stream_redis_url, settings.stream_key)} (group {settings.sink_consumer_group}) "
        f"into {settings.raw_namespace}.flight_events, batches of {settings.sink_batch_events:,} entries or "
        f"{settings.sink_batch_seconds:g} s; SIGTERM or Ctrl-C stops it"
    )
    stop = threading.Event()
    # The open batch is committed and acked before the sink returns: a stop leaves nothing pending.
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        report = run_sink(settings, stop=stop, on_commit=crash)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    table = output.table("entries read", "written", "duplicates", "quarantined", "already committed", "commits")
    table.add_row(
        f"{report.entries:,}",
        f"{report.written:,}",
        f"{report.duplicates:,}",
        f"{report.quarantined:,}",
        f"{report.already_committed:,}",
        f"{report.commits:,}",
    )
    output.show(table)
    output.show(f"committed through {report.last_id or report.started_after or 'nothing yet'}")


def _simulated_crash() -> Callable[[SinkReport], None] | None:
    """The test-only fault of LAB_SINK_SIMULATED_CRASH, as the sink's after-commit hook; None when unset."""
    import os
    import signal

    value = os.environ.get(SIMULATED_CRASH_VARIABLE, "")
    if not value:
        return None
    if value not in SIMULATED_CRASHES:
        raise LabError(
            f"{SIMULATED_CRASH_VARIABLE}={value!r}: the simulated crashes are {', '.join(SIMULATED_CRASHES)}"
        )
    output.note(
        f"[yellow]SIMULATED CRASH armed ({SIMULATED_CRASH_VARIABLE}={value}, for tests): SIGKILL after the first "
        "commit, before its ack[/yellow]"
    )

    def crash(report: SinkReport) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    return crash


def replay_command(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="First local date to replay (YYYY-MM-DD, in 2013).")],
    end: Annotated[str, typer.Option("--to", help="Last local date to replay (YYYY-MM-DD), inclusive.")],
    speed: Annotated[
        str, typer.Option(help="Timeline seconds per wall second (86400: a day a second), or max: no waiting.")
    ] = "max",
    url: Annotated[
        str | None, typer.Option(help="The API that follows the stream. Default: LAB_SERVE_HOST:LAB_SERVE_PORT.")
    ] = None,
    simulate_fault: Annotated[
        list[str] | None,
        typer.Option(
            "--simulate-fault",
            help="Inject one SIMULATED fault, halfway through: duplicate, malformed or out-of-order (repeatable).",
        ),
    ] = None,
) -> None:
    """Replay real days of 2013: each flight's outcome onto the stream when known, its prediction request to the API."""
    import httpx

    from ingestion.event_stream import connect, stream_uri
    from ingestion.events import bundled_flights
    from lab.traffic.stream_replay import api_stream_status, check_faults, parse_speed, stream_replay
    from lab.traffic.timeline import build_timeline

    settings = settings_for(ctx)
    first, last = _date(start, "--from"), _date(end, "--to")
    if first > last:
        raise LabError(f"--from {start} is after --to {end}")
    pace = parse_speed(speed)
    faults = check_faults(simulate_fault or ())
    flights = bundled_flights()
    years = {int(y) for y in flights["year"].unique().to_pylist()}
    for option, day in (("--from", first), ("--to", last)):
        if day.year not in years:
            raise LabError(f"{option} {day} is outside the bundled flights ({', '.join(map(str, sorted(years)))})")
    target = url or f"http://{settings.serve_host}:{settings.serve_port}"
    client = connect(settings.stream_redis_url)  # no Redis: the one error line, before anything else is said
    try:
        with httpx.Client(base_url=target, timeout=10.0) as http:
            following = api_stream_status(http, target)  # no API there: likewise
        if following is None or not following.get("following", True):
            output.note(
                f"[yellow]the API at {target} does not follow the stream (LAB_SERVE_FOLLOW_STREAM): "
                "its answers will not include the replayed events[/yellow]"
            )
        timeline = build_timeline(flights, first, last, settings.prediction_horizon_minutes)
        output.note(
            f"replaying {first}..{last}: {timeline.events.num_rows:,} events onto "
            f"{stream_uri(settings.stream_redis_url, settings.stream_key)}, {timeline.requests.num_rows:,} requests "
            f"to {target}/predict ({settings.prediction_horizon_minutes} min before departure), "
            + ("as fast as they are taken" if pace is None else f"at {pace:g}x")
        )
        if faults:
            output.note(f"[yellow]SIMULATED FAULTS armed (opt-in): {', '.join(faults)}[/yellow]")
        with output.progress("requests") as advance:
            result = stream_replay(
                timeline,
                redis_client=client,
                key=settings.stream_key,
                url=target,
                speed=pace,
                faults=faults,
                on_fault=lambda line: output.note(f"[yellow]{line}[/yellow]"),
                progress=advance,
            )
    finally:
        client.close()
    _show_replay(result)


def _date(text: str, option: str) -> date:
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise LabError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None


def _show_replay(result: StreamReplayResult) -> None:
    refused = sum(result.refused.values())
    table = output.table(
        "events published",
        "requests sent",
        "answered",
        "refused",
        "exact",
        "stale",
        "worker behind",
        "simulated faults",
        "seconds",
    )
    table.add_row(
        f"{result.events:,}",
        f"{result.requests:,}",
        f"{result.answered:,}",
        f"{refused:,}",
        f"{result.exact:,}",
        f"{result.stale:,}",
        f"{result.behind:,}",
        ", ".join(f"{kind} {count}" for kind, count in sorted(result.faults.items())) or "none",
        f"{result.seconds:.1f}",
    )
    output.show(table)
    for status, count in sorted(result.refused.items()):
        output.show(f"  [yellow]{count:,} refused with {status}[/yellow]")
    if result.first_refusal:
        output.show(f"  first refusal: {result.first_refusal}")
    if result.first_stale:
        output.show(f"  first stale answer: {result.first_stale}")
    published = result.last_event_at.isoformat() if result.last_event_at else "nothing"
    output.show(f"stream: last entry {result.last_id or 'none'}, events published through {published}")
    api = result.api_stream
    if api is None:
        output.show("[yellow]the API's /ready has no stream: it does not follow the stream[/yellow]")
    else:
        output.show("API watermark: " + ", ".join(f"{name} {value}" for name, value in api.items()))
