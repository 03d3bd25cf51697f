"""`lab stream replay` (issue 26): one timeline of real 2013 flights, events onto the stream, requests to the API.

The timeline tests use the bundled flights of a real December day (the demo replays December) with
many cancellations; the fault tests publish that day's events on a real Redis under a stream key of
their own, deleted afterwards, and read the stream back with XRANGE; a replay without faults reads back
exactly the timeline's events, so each fault test can fail. The end-to-end test replays a few hours of a
day to a real API that follows the same stream.

Redis: the session fixture ``redis_url`` of tests/conftest.py (never skipped).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from typer.testing import CliRunner

from core.errors import LabError
from core.processes import free_port
from core.settings import Settings, get_settings
from ingestion.event_stream import connect
from ingestion.events import EventError, FlightEvent, bundled_flights, from_fields, iter_events, to_fields
from lab.main import EXIT_USER_ERROR, app
from lab.traffic.parity import as_utc
from lab.traffic.stream_replay import (
    FAULTS,
    HELD_BACK_EVENTS,
    EventPublisher,
    check_faults,
    judge,
    parse_speed,
    stream_replay,
    wall_offsets,
)
from lab.traffic.timeline import BODY_COLUMNS, EVENT, REQUEST, Timeline, as_datetime, build_timeline

if TYPE_CHECKING:
    from ml.train import TrainResult

DAY = date(2013, 12, 5)  # 969 flights scheduled, 158 of them cancelled
HORIZON = 120
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def flights() -> pa.Table:
    return bundled_flights()


@pytest.fixture(scope="module")
def day_rows(flights: pa.Table) -> list[dict[str, object]]:
    """The bundled flights scheduled on DAY, read row by row: what the timeline must hold, no more."""
    chosen = pc.and_(
        pc.and_(pc.equal(flights["year"], DAY.year), pc.equal(flights["month"], DAY.month)),
        pc.equal(flights["day"], DAY.day),
    )
    return flights.filter(chosen).to_pylist()


@pytest.fixture(scope="module")
def timeline(flights: pa.Table) -> Timeline:
    return build_timeline(flights, DAY, DAY, HORIZON)


def items(timeline: Timeline) -> list[tuple[int, int, int]]:
    return list(zip(timeline.kind.tolist(), timeline.row.tolist(), timeline.instant.tolist(), strict=True))


def order_violations(kinds: list[int], instants: list[int]) -> int:
    """Events placed after a request whose instant is later than theirs (the request would miss them)."""
    latest_request, bad = None, 0
    for kind, instant in zip(kinds, instants, strict=True):
        if kind == REQUEST:
            latest_request = instant if latest_request is None else max(latest_request, instant)
        elif latest_request is not None and instant < latest_request:
            bad += 1
    return bad


# --- the timeline ---------------------------------------------------------------------------------


def test_a_day_s_timeline_holds_one_event_and_one_request_per_scheduled_flight(
    timeline: Timeline, day_rows: list[dict[str, object]]
) -> None:
    cancelled = sum(1 for r in day_rows if r["dep_time"] is None)
    assert len(day_rows) == 969 and cancelled == 158
    assert timeline.requests.num_rows == timeline.events.num_rows == len(day_rows)
    assert len(timeline) == 2 * len(day_rows)
    assert Counter(timeline.kind.tolist()) == {REQUEST: len(day_rows), EVENT: len(day_rows)}
    # Each table is walked front to back, every row once.
    for kind, table in ((REQUEST, timeline.requests), (EVENT, timeline.events)):
        assert timeline.row[timeline.kind == kind].tolist() == list(range(table.num_rows))
    assert pc.sum(pc.equal(timeline.events["kind"], "cancelled")).as_py() == cancelled


def test_nothing_is_invented_every_request_and_event_is_a_bundled_flight(
    timeline: Timeline, day_rows: list[dict[str, object]]
) -> None:
    # Bodies derived row by row, independently: the local time from sched_dep_time (hhmm), as a client has it.
    expected = Counter(
        (
            r["carrier"],
            r["flight"],
            r["tailnum"],
            r["origin"],
            r["dest"],
            f"{DAY.isoformat()}T{r['sched_dep_time'] // 100:02d}:{r['sched_dep_time'] % 100:02d}:00",  # type: ignore[operator]
        )
        for r in day_rows
    )
    bodies = timeline.bodies()
    assert list(timeline.iter_bodies()) == bodies
    assert all(tuple(body) == BODY_COLUMNS for body in bodies)  # exactly lab.traffic.examples' shape
    assert Counter(tuple(body.values()) for body in bodies) == expected
    ids = {f"{DAY.isoformat()}/{r['carrier']}/{r['flight']}/{r['origin']}" for r in day_rows}
    event_flights = [eid.rsplit("/", 1)[0] for eid in timeline.events["event_id"].to_pylist()]
    assert sorted(event_flights) == sorted(ids) and len(set(event_flights)) == len(day_rows)
    # Every event is what events_from_flights makes of the day's rows (its own checks pass row by row).
    assert len(list(iter_events(timeline.events))) == len(day_rows)


def test_the_api_accepts_every_request_body_and_reads_its_local_time(timeline: Timeline) -> None:
    from serving.schemas import FlightRequest

    for body, scheduled in zip(timeline.bodies(), timeline.requests["scheduled_departure_at"].to_pylist(), strict=True):
        request = FlightRequest.model_validate(body)
        assert request.scheduled_departure.tzinfo is None  # local, no offset, as the API reads it
        assert request.scheduled_departure.replace(tzinfo=NEW_YORK) == scheduled


def test_every_request_is_at_its_scheduled_departure_minus_the_horizon(timeline: Timeline) -> None:
    events = {e.event_id.rsplit("/", 1)[0]: e.scheduled_departure_at for e in iter_events(timeline.events)}
    rows = timeline.requests.to_pylist()
    for row in rows:
        scheduled = events[f"{DAY.isoformat()}/{row['carrier']}/{row['flight']}/{row['origin']}"]
        assert row["scheduled_departure_at"] == scheduled
        assert row["at"] == scheduled - timedelta(minutes=HORIZON)
    instants = timeline.instant[timeline.kind == REQUEST].tolist()
    assert instants == [int(r["at"].timestamp() * 1_000_000) for r in rows]
    other = build_timeline(bundled_flights(), DAY, DAY, 60)
    assert (other.instant[other.kind == REQUEST] - np.array(instants)).tolist() == [3_600_000_000] * len(rows)


def test_the_walk_is_in_time_order_and_no_event_comes_after_a_request_that_needs_it(timeline: Timeline) -> None:
    kinds, instants = timeline.kind.tolist(), timeline.instant.tolist()
    assert instants == sorted(instants)
    assert timeline.instant[timeline.kind == EVENT].tolist() == [
        int(t.timestamp() * 1_000_000) for t in timeline.events["at"].to_pylist()
    ]
    assert order_violations(kinds, instants) == 0
    # At an equal instant the requests come first (an event at P is in no feature of a prediction at P).
    ties = [
        (a[0], b[0])
        for a, b in zip(items(timeline), items(timeline)[1:], strict=False)
        if a[2] == b[2] and a[0] != b[0]
    ]
    assert ties and all(pair == (REQUEST, EVENT) for pair in ties)
    # The check can fail: the same items in another order break it.
    shuffled = np.random.default_rng(7).permutation(len(kinds))
    assert order_violations([kinds[i] for i in shuffled], [instants[i] for i in shuffled]) > 0


def test_before_cuts_a_prefix_of_the_walk_and_of_each_table(timeline: Timeline) -> None:
    cut = datetime(2013, 12, 5, 15, 0, tzinfo=UTC)  # 10:00 in New York
    part = timeline.before(cut)
    assert 0 < len(part) < len(timeline)
    assert part.instant.tolist() == [t for t in timeline.instant.tolist() if t < int(cut.timestamp() * 1_000_000)]
    assert part.events.num_rows == int(np.count_nonzero(part.kind == EVENT))
    assert part.events.equals(timeline.events.slice(0, part.events.num_rows))
    assert part.requests.equals(timeline.requests.slice(0, part.requests.num_rows))
    assert as_datetime(int(part.instant[-1])) < cut


def test_a_whole_year_builds_from_the_bundled_flights(flights: pa.Table) -> None:
    year = build_timeline(flights, date(2013, 1, 1), date(2013, 12, 31), HORIZON)
    assert year.events.num_rows == year.requests.num_rows == flights.num_rows == 336_776
    assert bool(np.all(np.diff(year.instant) >= 0))


# --- speed ----------------------------------------------------------------------------------------


def test_speed_maps_timeline_time_to_wall_time() -> None:
    day_us = 86_400 * 1_000_000
    instants = np.array([5 * day_us, 5 * day_us + day_us // 2, 6 * day_us], dtype=np.int64)
    assert wall_offsets(instants, 86_400).tolist() == [0.0, 0.5, 1.0]  # a day a second
    assert wall_offsets(instants, 3_600).tolist() == [0.0, 12.0, 24.0]  # an hour a second
    assert wall_offsets(instants, None).tolist() == [0.0, 0.0, 0.0]  # max: no sleeping
    assert parse_speed("max") is None and parse_speed("MAX") is None
    assert parse_speed("86400") == 86_400.0 and parse_speed("0.5") == 0.5
    for bad in ("fast", "0", "-3", "inf", "nan"):
        with pytest.raises(LabError, match="--speed"):
            parse_speed(bad)


# --- simulated faults on a real Redis ------------------------------------------------------------


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = connect(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = f"lab-test:{uuid.uuid4().hex[:12]}:flight-events"
    yield name
    client.delete(name)


def replay_events(client: redis.Redis, key: str, timeline: Timeline, faults: tuple[str, ...]) -> EventPublisher:
    """Publish the timeline's events in its runs (between requests), as the replay does."""
    notes: list[str] = []
    publisher = EventPublisher(client, key, timeline.events, faults, note=notes.append)
    boundaries = [*np.flatnonzero(np.diff(timeline.kind)) + 1, len(timeline)]
    start = 0
    for end in boundaries:
        if timeline.kind[start] == EVENT:
            publisher.publish(end - start)
        start = end
    publisher.finish()
    assert notes == publisher.result.fault_notes
    return publisher


def read_back(client: redis.Redis, key: str) -> list[tuple[str, dict[bytes, bytes]]]:
    return [(entry_id.decode(), fields) for entry_id, fields in client.xrange(key)]


def wire(event: FlightEvent) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in to_fields(event).items()}


@pytest.mark.integration
def test_without_faults_the_stream_holds_exactly_the_timeline_s_events(
    client: redis.Redis, key: str, timeline: Timeline
) -> None:
    publisher = replay_events(client, key, timeline, ())
    entries = read_back(client, key)
    assert [fields for _, fields in entries] == [wire(e) for e in iter_events(timeline.events)]
    assert publisher.last_id == entries[-1][0]
    assert publisher.result.events == timeline.events.num_rows and not publisher.result.faults
    assert publisher.max_at_us == max(timeline.instant[timeline.kind == EVENT].tolist())


@pytest.mark.integration
def test_a_simulated_duplicate_is_an_exact_copy_of_an_event_already_published(
    client: redis.Redis, key: str, timeline: Timeline
) -> None:
    events = list(iter_events(timeline.events))
    publisher = replay_events(client, key, timeline, ("duplicate",))
    entries = [fields for _, fields in read_back(client, key)]
    assert len(entries) == len(events) + 1
    copied = events[len(events) // 2 - 1]  # the last one published before the halfway point
    position = len(events) // 2
    assert entries[position] == wire(copied) == entries[position - 1]
    assert entries[:position] + entries[position + 1 :] == [wire(e) for e in events]  # nothing else changed
    assert publisher.result.faults == {"duplicate": 1}
    assert publisher.result.events == len(events)  # a duplicate is no real event
    (line,) = publisher.result.fault_notes
    assert line.startswith("SIMULATED FAULT: duplicate:") and copied.event_id in line


@pytest.mark.integration
def test_a_simulated_malformed_entry_is_refused_by_the_reader_and_alters_no_flight(
    client: redis.Redis, key: str, timeline: Timeline
) -> None:
    events = list(iter_events(timeline.events))
    publisher = replay_events(client, key, timeline, ("malformed",))
    entries = read_back(client, key)
    assert len(entries) == len(events) + 1
    good, refused = [], []
    for entry_id, fields in entries:
        try:
            good.append(from_fields(fields))
        except EventError as exc:
            refused.append((entry_id, exc.field))
    assert good == events
    assert len(refused) == 1 and refused[0][1] == "at"
    assert publisher.result.faults == {"malformed": 1}
    (line,) = publisher.result.fault_notes
    assert line.startswith("SIMULATED FAULT: malformed:") and refused[0][0] in line


@pytest.mark.integration
def test_a_simulated_out_of_order_event_is_real_and_published_after_later_ones(
    client: redis.Redis, key: str, timeline: Timeline
) -> None:
    events = list(iter_events(timeline.events))
    publisher = replay_events(client, key, timeline, ("out-of-order",))
    read = [from_fields(fields) for _, fields in read_back(client, key)]
    assert len(read) == len(events) and Counter(e.event_id for e in read) == Counter(e.event_id for e in events)
    assert set(read) == set(events)  # the same real events, only one of them late
    held = events[len(events) // 2]
    position = read.index(held)
    assert position == len(events) // 2 + HELD_BACK_EVENTS
    assert read[:position] + read[position + 1 :] == [e for e in events if e != held]
    assert any(e.at > held.at for e in read[:position])  # published after events that happened after it
    assert publisher.result.faults == {"out-of-order": 1} and publisher.result.events == len(events)
    (line,) = publisher.result.fault_notes
    assert line.startswith("SIMULATED FAULT: out-of-order:") and held.event_id in line


@pytest.mark.integration
def test_all_three_faults_at_once(client: redis.Redis, key: str, timeline: Timeline) -> None:
    publisher = replay_events(client, key, timeline, FAULTS)
    assert publisher.result.faults == dict.fromkeys(FAULTS, 1)
    assert client.xlen(key) == timeline.events.num_rows + 2  # one duplicate, one malformed entry
    assert [line.split(":")[1].strip() for line in publisher.result.fault_notes] == list(FAULTS)


def test_an_unknown_fault_is_refused() -> None:
    assert check_faults(["out-of-order", "duplicate", "duplicate"]) == ("duplicate", "out-of-order")
    with pytest.raises(LabError, match="'crash': the simulated faults are duplicate, malformed, out-of-order"):
        check_faults(["crash"])


# --- the command's errors -------------------------------------------------------------------------


@pytest.fixture
def lab_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[str]:
    """A lab home of this test's own and a stream key of its own on the real Redis; the key."""
    name = f"lab-test:{uuid.uuid4().hex[:12]}:flight-events"
    monkeypatch.setenv("LAB_HOME", str(tmp_path / ".lab"))
    monkeypatch.setenv("LAB_STREAM_REDIS_URL", redis_url)
    monkeypatch.setenv("LAB_STREAM_KEY", name)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield name
    get_settings.cache_clear()


def one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["stream", "replay", *args])
    assert result.exit_code == EXIT_USER_ERROR, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2013-12-32", "--to", "2013-12-31"], "--from '2013-12-32' is not a date (YYYY-MM-DD)"),
        (["--from", "yesterday", "--to", "2013-12-31"], "--from 'yesterday' is not a date (YYYY-MM-DD)"),
        (["--from", "2013-12-01", "--to", "2013-12"], "--to '2013-12' is not a date (YYYY-MM-DD)"),
        (["--from", "2013-12-05", "--to", "2013-12-04"], "--from 2013-12-05 is after --to 2013-12-04"),
        (["--from", "2012-12-31", "--to", "2013-01-02"], "--from 2012-12-31 is outside the bundled flights (2013)"),
        (["--from", "2013-12-30", "--to", "2014-01-01"], "--to 2014-01-01 is outside the bundled flights (2013)"),
        (["--from", "2013-12-01", "--to", "2013-12-01", "--speed", "fast"], "--speed 'fast' is neither"),
        (["--from", "2013-12-01", "--to", "2013-12-01", "--simulate-fault", "crash"], "--simulate-fault 'crash'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    args: list[str], message: str, lab_env: str, client: redis.Redis
) -> None:
    assert message in one_line_error(args)
    assert not client.exists(lab_env)


def test_no_redis_is_one_line(lab_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("LAB_STREAM_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    line = one_line_error(["--from", "2013-12-05", "--to", "2013-12-05"])
    assert f"no Redis answers at redis://127.0.0.1:{port}/0" in line


@pytest.mark.integration
def test_no_api_at_the_url_is_one_line_and_nothing_is_published(lab_env: str, client: redis.Redis) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(["--from", "2013-12-05", "--to", "2013-12-05", "--url", url])
    assert f"no API answers at {url}" in line
    assert not client.exists(lab_env)


def test_an_answer_is_exact_and_caught_up_only_when_its_watermark_and_position_say_so() -> None:
    needed = int(datetime(2013, 12, 5, 15, 0, tzinfo=UTC).timestamp() * 1_000_000)
    answer = {"events_through": "2013-12-05T15:00:00+00:00", "stream_position": "1700000000000-5"}
    assert judge(answer, "1700000000000-5", needed) == (True, True)
    assert judge(answer, "999999999999-9", needed) == (True, True)  # ids order as numbers, not text
    assert judge(answer, "1700000000000-6", needed) == (True, False)  # the worker had not applied it
    assert judge(answer, "1700000000000-5", needed + 1) == (False, True)  # a microsecond short is stale
    assert judge({**answer, "events_through": "2013-12-05T10:00:00-05:00"}, None, needed) == (True, True)
    assert judge({**answer, "events_through": None}, None, needed) == (False, True)
    assert judge({**answer, "events_through": "2013-12-05T15:00:00"}, None, needed) == (False, True)  # no offset
    assert judge({"events_through": None, "stream_position": None}, None, None) == (True, True)  # nothing to wait for
    assert judge({"events_through": None, "stream_position": None}, "1-0", None) == (True, False)


# --- end to end: a real API following the same stream --------------------------------------------


@pytest.fixture(scope="module")
def through_november(trained: tuple[Settings, TrainResult], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session's published features with the outcomes of January to November only, published anew.

    As the demo has it: the batch ends before December, so the replayed days' outcomes reach the API
    only through the stream, and an answer's ``events_through`` says whether they did. The flights of
    December are left out by their local date (the event id's), as a batch of the monthly files through
    November would leave them out. The model is the session's (its registry and artifacts are shared).
    """
    from tests.helpers.features import publish_tables
    from warehouse.online import read_current

    model_settings, _ = trained
    tables = dict(read_current(model_settings).tables)
    outcomes = tables["online_flight_outcomes"]
    tables["online_flight_outcomes"] = outcomes.filter(pc.less(outcomes["event_id"], "2013-12-01"))
    settings = model_settings.model_copy(
        update={"features_uri": (tmp_path_factory.mktemp("through-november") / "features").as_uri()}
    )
    publish_tables(settings, tables, stream_after="0-0")
    return settings


@pytest.fixture(scope="module")
def following_api(
    trained: tuple[Settings, TrainResult],
    through_november: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
) -> Iterator[tuple[str, Settings]]:
    """`lab serve` (two workers) of the session's model on features through November, following a stream key
    of this module's own."""
    from ml.registry import promote
    from serving.process import api_server

    _, result = trained
    promote(through_november, result.model_version)
    serve = through_november.model_copy(
        update={
            "prediction_log_url": f"sqlite:///{tmp_path_factory.mktemp('stream-replay') / 'predictions.db'}",
            "serve_poll_seconds": 0.0,
            "serve_workers": 2,
            "serve_follow_stream": True,
            "stream_redis_url": redis_url,
            "stream_key": f"lab-test:{uuid.uuid4().hex[:12]}:flight-events",
        }
    )
    try:
        with api_server(serve) as (url, _):
            yield url, serve
    finally:
        with connect(redis_url) as client:
            client.delete(serve.stream_key)


@pytest.mark.slow
@pytest.mark.integration
def test_a_replay_to_a_following_api_is_answered_exactly_at_the_speed_asked(
    following_api: tuple[str, Settings], client: redis.Redis, timeline: Timeline
) -> None:
    url, settings = following_api
    start = httpx.get(f"{url}/ready").json()["stream"]
    assert start["following"] and start["events_through"] < "2013-12-02"  # the batch ends with November
    part = timeline.before(datetime(2013, 12, 5, 12, 0, tzinfo=UTC))  # 03:00-07:00 in New York: 4 h
    speed = 7_200.0  # two hours a second
    result = stream_replay(part, redis_client=client, key=settings.stream_key, url=url, speed=speed)

    assert part.requests.num_rows > 100 and part.events.num_rows > 50
    assert result.requests == result.answered == part.requests.num_rows, result.first_refusal
    assert not result.refused
    assert (result.exact, result.stale, result.behind) == (result.answered, 0, 0), result.first_stale
    assert result.events == part.events.num_rows and not result.faults
    span = (int(part.instant[-1]) - int(part.instant[0])) / 1e6 / speed
    assert span - 0.05 <= result.seconds <= span + 15  # paced by the timeline, not as fast as possible
    entries = client.xrange(settings.stream_key)
    assert [from_fields(fields) for _, fields in entries][-part.events.num_rows :] == list(iter_events(part.events))
    assert result.api_stream is not None and result.api_stream["position"] == result.last_id
    assert result.api_stream["malformed"] == 0 and result.api_stream["connected"]
    assert result.api_stream["applied"] == part.events.num_rows  # from the stream, none of them in the batch
    assert result.last_event_at is not None and result.api_stream["events_through"] >= "2013-12-05"


@pytest.mark.slow
@pytest.mark.integration
def test_lab_stream_replay_of_a_day_with_every_simulated_fault(
    following_api: tuple[str, Settings], client: redis.Redis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, settings = following_api
    day = build_timeline(bundled_flights(), date(2013, 12, 6), date(2013, 12, 6), settings.prediction_horizon_minutes)
    monkeypatch.setenv("LAB_HOME", str(tmp_path / ".lab"))
    monkeypatch.setenv("LAB_STREAM_REDIS_URL", settings.stream_redis_url)
    monkeypatch.setenv("LAB_STREAM_KEY", settings.stream_key)
    monkeypatch.setenv("LAB_PREDICTION_HORIZON_MINUTES", str(settings.prediction_horizon_minutes))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    before = client.xlen(settings.stream_key)
    args = ["stream", "replay", "--from", "2013-12-06", "--to", "2013-12-06", "--url", url]
    try:
        result = CliRunner().invoke(app, [*args, *(f"--simulate-fault={kind}" for kind in FAULTS)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    for kind in FAULTS:
        assert f"SIMULATED FAULT: {kind}:" in result.output
    n = day.requests.num_rows
    (row,) = [line for line in result.output.splitlines() if line.count("│") >= 8 and f"{n:,}" in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    # events, requests, answered, refused, exact, stale, worker behind
    assert cells[:7] == [f"{day.events.num_rows:,}", f"{n:,}", f"{n:,}", "0", f"{n:,}", "0", "0"], row
    assert client.xlen(settings.stream_key) == before + day.events.num_rows + 2  # a duplicate, a malformed entry
    ready = httpx.get(f"{url}/ready").json()["stream"]
    assert (
        ready["malformed"] >= 1 and ready["position"] == client.xrevrange(settings.stream_key, count=1)[0][0].decode()
    )
    assert "API watermark: " in result.output


@pytest.mark.slow
@pytest.mark.integration
def test_an_api_killed_mid_replay_resumes_from_the_batch_position_and_the_stream(
    trained: tuple[Settings, TrainResult],
    through_november: Settings,
    redis_url: str,
    client: redis.Redis,
    key: str,
    tmp_path: Path,
) -> None:
    """SIGKILL the API in the middle of a replay of three days, start it again, replay the rest.

    The restarted API loads the batch (through November, stream position ``0-0``) and reads the
    stream from there, so every prediction of the rest of the day is logged with exactly the
    features the batch of the whole year gives: compared feature by feature with the log.
    """
    import json
    import signal

    import sqlalchemy as sa

    from ml.registry import promote
    from serving.features import OnlineFeatures
    from serving.process import api_server
    from serving.schemas import FlightRequest
    from warehouse.online import read_current

    model_settings, result = trained
    promote(through_november, result.model_version)
    log_url = f"sqlite:///{tmp_path / 'predictions.db'}"
    serve = through_november.model_copy(
        update={
            "prediction_log_url": log_url,
            "serve_poll_seconds": 0.0,
            "serve_follow_stream": True,
            "stream_redis_url": redis_url,
            "stream_key": key,
        }
    )
    # From the first day after the batch: a feature's 28-day window reaches back to it.
    day = build_timeline(bundled_flights(), date(2013, 12, 1), date(2013, 12, 3), serve.prediction_horizon_minutes)
    cut = datetime(2013, 12, 3, 17, tzinfo=UTC)  # noon in New York, on the third day
    first, rest = day.before(cut), day.since(cut)
    assert len(first) + len(rest) == len(day) and rest.requests.num_rows > 300
    with api_server(serve) as (url, process):
        before = stream_replay(first, redis_client=client, key=key, url=url)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    with api_server(serve) as (url, _):
        after = stream_replay(rest, redis_client=client, key=key, url=url)
    assert before.answered == first.requests.num_rows and after.answered == rest.requests.num_rows
    assert (after.exact, after.stale, after.behind) == (after.answered, 0, 0)
    assert after.api_stream is not None and after.api_stream["applied"] == day.events.num_rows

    tables = read_current(model_settings).tables  # the whole year's batch
    whole = OnlineFeatures.from_tables("all", tables, serve.prediction_horizon_minutes, serve.late_departure_minutes)
    with sa.create_engine(log_url).connect() as conn:
        logged = conn.execute(
            sa.text("select carrier, flight, tailnum, origin, dest, scheduled_departure_at, features from predictions")
        ).all()
    due = cut + timedelta(minutes=serve.prediction_horizon_minutes)  # the requests of the rest are scheduled from here
    rows = [(row, as_utc(row.scheduled_departure_at)) for row in logged]
    rows = [(row, departure) for row, departure in rows if departure >= due]
    assert len(rows) == rest.requests.num_rows  # a graceful stop logged every answer
    differing = []
    for row, departure in rows:
        request = FlightRequest(
            carrier=row.carrier,
            flight=row.flight,
            tailnum=row.tailnum,
            origin=row.origin,
            dest=row.dest,
            scheduled_departure=departure,
        )
        expected = json.loads(json.dumps(whole.assemble(request)[0], default=str))
        if json.loads(row.features) != expected:
            differing.append(row)
    assert differing == [], f"{len(differing)} of {len(rows)} differ, e.g. {differing[0]}"


# --- Redis restarted mid-replay, and the broken variant: an API that ignores the stream -------------


def _check_settings(model_settings: Settings, log_url: str, lake: Settings) -> Settings:
    """The whole year's features and marts (what December's file gives), this test's log, the sink's lake."""
    return model_settings.model_copy(
        update={"prediction_log_url": log_url, "catalog_uri": lake.catalog_uri, "warehouse_uri": lake.warehouse_uri}
    )


def _lab_stream_check(settings: Settings, first: date, last: date, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`lab stream check` over first..last, as a user runs it with ``settings`` in the environment."""
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["stream", "check", "--from", first.isoformat(), "--to", last.isoformat()])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


@pytest.mark.slow
@pytest.mark.integration
def test_redis_restarted_mid_replay_loses_nothing_and_an_api_ignoring_the_stream_fails_the_check(
    trained: tuple[Settings, TrainResult],
    through_november: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis (appending every write) is stopped and started again halfway through a replay of two days.

    The replay rides it out (its next XADD waits for Redis), the API answers on and reads on from its
    position once Redis is back, the sink (a real `lab stream sink`) does too: every answer is exact,
    `lab stream check` finds every logged feature equal to the whole year's batch and every event in
    ``raw.flight_events`` once. The same replay to an API that ignores the stream fails the same check,
    on flights of the same two days.
    """
    from ingestion.sink_process import sink_process, wait_for_delivery
    from lab.traffic.parity import compare_logged_features
    from ml.registry import promote
    from serving.process import api_server
    from tests.helpers.redis_server import RedisServer

    model_settings, result = trained
    promote(through_november, result.model_version)
    server = RedisServer(tmp_path / "redis")
    key = f"lab-test:{uuid.uuid4().hex[:12]}:flight-events"
    lake = Settings(home=tmp_path / "sink" / ".lab", stream_redis_url=server.url, stream_key=key)
    lake = lake.model_copy(update={"sink_batch_seconds": 0.5})
    first, last = date(2013, 12, 1), date(2013, 12, 2)
    days = build_timeline(bundled_flights(), first, last, through_november.prediction_horizon_minutes)

    def serve(log: str, follow: bool) -> Settings:
        return through_november.model_copy(
            update={
                "prediction_log_url": f"sqlite:///{tmp_path / log}",
                "serve_poll_seconds": 0.0,
                "serve_follow_stream": follow,
                "stream_redis_url": server.url,
                "stream_key": key if follow else f"{key}:unread",
                # A request waiting for an entry published just before Redis stopped outlasts the restart.
                "serve_stream_wait_seconds": 30.0,
            }
        )

    restarts: list[int] = []

    def restart_halfway(sent: int) -> None:
        if not restarts and sent >= days.requests.num_rows // 2:
            restarts.append(sent)
            server.stop()
            threading.Timer(2.0, server.start).start()  # the replay goes on meanwhile, and meets Redis away

    following = serve("following.db", follow=True)
    try:
        with sink_process(lake) as sink, api_server(following) as (url, _):
            replayed = stream_replay(days, redis_client=connect(server.url), key=key, url=url, progress=restart_halfway)
            ready = httpx.get(f"{url}/ready").json()
            assert replayed.last_id is not None
            wait_for_delivery(lake, connect(server.url), sink, replayed.last_id)
        # The broken variant: the same timeline, answered by an API that does not follow the stream.
        with api_server(serve("ignoring.db", follow=False)) as (url, _):
            ignored = stream_replay(days, redis_client=connect(server.url), key=f"{key}:unread", url=url)
    finally:
        server.stop()

    n = days.requests.num_rows
    assert restarts and replayed.redis_outages >= 1
    assert (replayed.requests, replayed.answered, replayed.exact, replayed.behind) == (n, n, n, 0), (
        replayed.first_refusal or replayed.first_stale
    )
    stream = ready["stream"]
    assert stream["errors"] >= 1 and stream["connected"] and ready["status"] == "ready"
    assert stream["applied"] == days.events.num_rows and stream["position"] == replayed.last_id

    good = _check_settings(model_settings, following.prediction_log_url, lake)
    report = compare_logged_features(good, first, last)
    assert (report.predictions, report.equal_online) == (n, n), report.differences
    assert report.in_mart > 0.9 * n and report.equal_mart == report.in_mart, report.differences
    assert report.events_in_lake == report.events_distinct == report.events_expected == days.events.num_rows
    code, output = _lab_stream_check(good, first, last, monkeypatch)
    assert code == 0 and "stream equals batch" in output, output

    assert ignored.answered == n and ignored.stale > 0  # its watermark says it saw none of the events
    broken = compare_logged_features(
        _check_settings(model_settings, f"sqlite:///{tmp_path / 'ignoring.db'}", lake), first, last
    )
    assert broken.predictions == n and n - broken.equal_online > n // 3
    logged_flights = {row_name for row_name in broken.differing_flights}
    assert all(name.split(" ")[-2] in {first.isoformat(), last.isoformat()} for name in logged_flights)
    assert {"origin_late_share_2h", "origin_departures_2h"} <= set(broken.differing_features)
    code, output = _lab_stream_check(
        _check_settings(model_settings, f"sqlite:///{tmp_path / 'ignoring.db'}", lake), first, last, monkeypatch
    )
    assert code == 1 and "differing on" in output, output
