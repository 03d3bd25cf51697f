"""Streaming: a year of flight events into Iceberg and into an API worker's features, and /predict under a stream.

Prints, in one run, on fresh stream keys of the Redis at ``LAB_STREAM_REDIS_URL``
(the machine's, 127.0.0.1:6379, by default):

The lake sink, on a fresh local-folder lake:

- publish: events/s of ``publish`` (pipelined XADD) of the bundled year's events
  (336,776 departures and cancellations, in replay order);
- sink: events/s of ``run_sink`` reading them back through its consumer group,
  committing micro-batches of ``LAB_SINK_BATCH_EVENTS`` and acking each, until
  the stream is drained; its commits, and its data files per streamed day;
- baseline: events/s of appending the same events to an Iceberg table in one
  commit (what a batch load of them would cost), and the sink's ratio to it.

The API's side, with ``--home`` (a lab home with published features and a champion,
``make demo`` makes one; skipped without it):

- freshness: an API worker's reader (``serving.stream.StreamFollower``, in this
  process) on the home's features, events published at 1,000 and 5,000 events/s for
  ``--seconds``; per event, from just before its XADD to its ``apply``, p50/p99 in ms.
  The batch's event ids are cleared, so each event takes the full append path
  rather than the cheaper "the batch has it" one;
- the year at full speed: the 336,776 events published as fast as XADD takes them,
  seconds until the reader has applied the last (and its events/s);
- /predict p99 at concurrency 1 on a real ``lab serve`` following the stream, with
  no events, then while events arrive at 1,000/s, and the ratio of the two. That
  server's batch holds the home's outcomes, so an event of them is read, parsed
  and refused by its id (not appended): the reading is what competes with requests.

Goals (issue 26): freshness p99 <= 500 ms; the year <= 120 s; /predict p99 <= 5 ms
at c=1 under 1,000 events/s.
Run: ``.venv/bin/python bench/stream.py [--home .lab] [--seconds 10] [--no-sink]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=ROOT / ".lab")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-sink", action="store_true", help="only the API's side")
    args = parser.parse_args()
    if not args.no_sink:
        lake_sink()
    if not (args.home / "features").exists():
        print(f"\nno published features under {args.home}: the API's side is skipped (make demo makes them)")
        return
    api_side(args.home, args.seconds, args.requests)


def lake_sink() -> None:
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def api_side(home: Path, seconds: float, requests: int) -> None:
    from core.settings import Settings
    from ingestion.event_stream import connect
    from ingestion.events import bundled_flights, events_from_flights, iter_events

    base = Settings(home=home, sources_dirs=[], serve_poll_seconds=0.0)
    events = list(iter_events(events_from_flights(bundled_flights())))
    client = connect(base.stream_redis_url)
    keys: list[str] = []

    def fresh() -> Settings:
        keys.append(f"bench:follow:{uuid.uuid4().hex[:8]}")
        return base.model_copy(update={"stream_key": keys[-1], "serve_follow_stream": True})

    try:
        print(f"\nan API worker's reader on the features of {home} ({len(events):,} real events, cycled)")
        print(f"{'events/s':>9} {'events':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for rate in (1_000, 5_000):
            lags = freshness(fresh(), client, events, rate, seconds)
            print(
                f"{rate:>9,} {len(lags):>8,} {percentile(lags, 0.5):>8.2f} {percentile(lags, 0.99):>8.2f}"
                f" {max(lags):>8.2f}"
            )
        took = year_at_full_speed(fresh(), client, events)
        print(f"the year at full speed: {len(events):,} events applied in {took:.1f} s ({len(events) / took:,.0f}/s)")
        quiet, busy = predict_under_stream(fresh(), client, events, requests)
        print(f"\n/predict at concurrency 1, {requests} requests, a real `lab serve` following the stream")
        print(f"{'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"{0:>9} {quiet[0]:>8.2f} {quiet[1]:>8.2f}")
        print(f"{1_000:>9,} {busy[0]:>8.2f} {busy[1]:>8.2f}")
        print(f"p99 under 1,000 events/s / p99 without: {busy[1] / quiet[1]:.2f}x")
    finally:
        for key in keys:
            client.delete(key)
        client.close()


def _timed_reader(settings: Any) -> tuple[Any, Any, dict[str, float]]:
    """A reader on the home's features (batch ids cleared), recording when each event id was applied."""
    import numpy as np

    from serving.features import OnlineFeatures
    from serving.stream import StreamFollower

    features = OnlineFeatures.load(settings)
    features.batch_event_hashes = np.empty(0, dtype=np.int64)
    applied: dict[str, float] = {}
    apply = features.apply

    def timed(event: Any) -> bool:
        done = apply(event)
        applied[event.event_id] = time.perf_counter()
        return done

    features.apply = timed  # type: ignore[method-assign]
    follower = StreamFollower(settings, features, "0-0")
    return features, follower, applied


def _publish_paced(client: Any, key: str, events: list[Any], rate: float, seconds: float) -> dict[str, float]:
    """XADD ``rate`` events a second for ``seconds``, in 10 ms ticks; when each id was sent."""
    from ingestion.events import to_fields

    sent: dict[str, float] = {}
    tick = 0.01
    per_tick = max(1, round(rate * tick))
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        pipe = client.pipeline(transaction=False)
        now = time.perf_counter()
        for _ in range(per_tick):
            event = events[i % len(events)]
            i += 1
            pipe.xadd(key, to_fields(event))
            sent.setdefault(event.event_id, now)
        pipe.execute()
        time.sleep(max(0.0, started + (i / per_tick) * tick - time.perf_counter()))
    return sent


def freshness(settings: Any, client: Any, events: list[Any], rate: float, seconds: float) -> list[float]:
    _, follower, applied = _timed_reader(settings)
    follower.start()
    try:
        sent = _publish_paced(client, settings.stream_key, events, rate, seconds)
        deadline = time.perf_counter() + 30
        while len(applied) < len(sent) and time.perf_counter() < deadline:
            time.sleep(0.05)
    finally:
        follower.stop()
    return [(applied[i] - t) * 1000 for i, t in sent.items() if i in applied]


def year_at_full_speed(settings: Any, client: Any, events: list[Any]) -> float:
    from ingestion.event_stream import publish

    _, follower, _ = _timed_reader(settings)
    follower.start()
    try:
        started = time.perf_counter()
        last = publish(client, settings.stream_key, events)
        assert last is not None
        if not follower.wait_for(last, timeout=600):
            raise SystemExit("the reader did not apply the year within 600 s")
        return time.perf_counter() - started
    finally:
        follower.stop()


def predict_under_stream(
    settings: Any, client: Any, events: list[Any], requests: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50, p99) ms of /predict at c=1 without events, then with 1,000 events/s arriving."""
    import multiprocessing

    import httpx

    from lab.traffic.examples import real_flight_requests
    from serving.process import api_server

    bodies = [
        {k: v for k, v in body.items() if k != "departure_delay_minutes"}
        for body in real_flight_requests(settings, 500)
    ]
    log = settings.home / "bench-stream-predictions.db"
    serve = settings.model_copy(update={"prediction_log_url": f"sqlite:///{log}"})

    def run(url: str) -> tuple[float, float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for body in bodies[:20]:
                http.post("/predict", json=body).raise_for_status()
            for i in range(requests):
                started = time.perf_counter()
                http.post("/predict", json=bodies[i % len(bodies)]).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)
        return percentile(latencies, 0.5), percentile(latencies, 0.99)

    with api_server(serve) as (url, _):
        quiet = run(url)
        # The events come from a process of their own: a publishing thread here would hold
        # this process's interpreter lock and be timed as the API's latency.
        publisher = multiprocessing.get_context("spawn").Process(
            target=_stream_forever, args=(settings.stream_redis_url, settings.stream_key, 1_000), daemon=True
        )
        publisher.start()
        try:
            time.sleep(2.0)  # the stream reaches its rate before requests are timed
            busy = run(url)
        finally:
            publisher.terminate()
            publisher.join(timeout=10)
    log.unlink(missing_ok=True)
    return quiet, busy


def _stream_forever(url: str, key: str, rate: float) -> None:
    """Publish the year's events at ``rate`` a second, a new second of them each second, until terminated."""
    from ingestion.event_stream import connect
    from ingestion.events import bundled_flights, events_from_flights, iter_events

    events = list(iter_events(events_from_flights(bundled_flights())))
    client = connect(url)
    second = 0
    while True:
        start = second * int(rate) % len(events)
        _publish_paced(client, key, events[start:], rate, 1.0)
        second += 1


if __name__ == "__main__":
    main()
