"""The flight event stream: ``lab stream sink`` writes it into the lake.

SIMULATED FAULT, for the fault test only: with ``LAB_SINK_SIMULATED_CRASH=after-commit``
in its environment the sink kills itself with SIGKILL right after its first commit and
before acknowledging it, the one moment a crash could write a batch twice
(tests/ingestion/test_event_sink.py proves it does not). It is read here, not in the
settings, so no deployment's configuration can carry it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from core.errors import LabError
from lab import output
from lab.context import settings_for

if TYPE_CHECKING:
    from ingestion.event_sink import SinkReport

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
