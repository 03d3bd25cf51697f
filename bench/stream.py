"""The lake sink's speed: a year of flight events through Redis Streams into Iceberg, against one batch append.

Prints, in one run, on a fresh local-folder lake and a fresh stream key of the
Redis at ``LAB_STREAM_REDIS_URL`` (the machine's, 127.0.0.1:6379, by default):

- publish: events/s of ``publish`` (pipelined XADD) of the bundled year's events
  (336,776 departures and cancellations, in replay order);
- sink: events/s of ``run_sink`` reading them back through its consumer group,
  committing micro-batches of ``LAB_SINK_BATCH_EVENTS`` and acking each, until
  the stream is drained; its commits, and its data files per streamed day;
- baseline: events/s of appending the same events to an Iceberg table in one
  commit (what a batch load of them would cost), and the sink's ratio to it.

The issue's goals for the stream (freshness at the API, a year end to end in
<= 120 s) need the API's consumer and the replay, which are not built yet.
Run: ``.venv/bin/python bench/stream.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import pyarrow.compute as pc

    from core.settings import Settings
    from ingestion.event_sink import events_table_schema, run_sink
    from ingestion.event_stream import connect, publish
    from ingestion.events import bundled_flights, events_from_flights, iter_events
    from ingestion.storage import open_catalog

    timeline = events_from_flights(bundled_flights())
    events = list(iter_events(timeline))
    with tempfile.TemporaryDirectory() as tmp:
        key = f"bench:flight-events:{uuid.uuid4().hex[:8]}"
        settings = Settings(_env_file=None, home=Path(tmp) / "lab", stream_key=key)  # type: ignore[call-arg]
        client = connect(settings.stream_redis_url)
        try:
            started = time.perf_counter()
            publish(client, key, events)
            publish_s = time.perf_counter() - started

            started = time.perf_counter()
            report = run_sink(settings, max_idle_seconds=1.0)
            sink_s = time.perf_counter() - started - 1.0  # the idle second that ends the run is not work

            table = open_catalog(settings).load_table(f"{settings.raw_namespace}.flight_events")
            files = len(table.inspect.files())
            days = len(pc.unique(pc.strftime(table.scan(selected_fields=("at",)).to_arrow()["at"], "%Y-%m-%d")))

            rows = table.scan().to_arrow()
            baseline_table = open_catalog(settings).create_table(
                f"{settings.raw_namespace}.flight_events_batch", schema=events_table_schema()
            )
            started = time.perf_counter()
            baseline_table.append(rows)
            batch_s = time.perf_counter() - started
        finally:
            client.delete(key)
            client.close()
    assert report.written == len(events) == rows.num_rows, (report.written, len(events), rows.num_rows)
    print(f"events: {len(events):,} (the bundled year), sink batches of {settings.sink_batch_events:,}")
    print(f"{'step':<28} {'seconds':>8} {'events/s':>10}")
    print(f"{'publish (XADD, pipelined)':<28} {publish_s:>8.2f} {len(events) / publish_s:>10,.0f}")
    print(f"{'sink (read, commit, ack)':<28} {sink_s:>8.2f} {len(events) / sink_s:>10,.0f}")
    print(f"{'baseline: one batch append':<28} {batch_s:>8.2f} {len(events) / batch_s:>10,.0f}")
    print(
        f"sink/baseline time: {sink_s / batch_s:.2f}x; {report.commits} commits, {files} data files "
        f"over {days} streamed days ({files / days:.2f} files per day)"
    )


if __name__ == "__main__":
    main()
