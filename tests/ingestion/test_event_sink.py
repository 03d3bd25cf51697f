"""The lake sink (issue 26): flight events from Redis Streams into ``raw.flight_events``, exactly once.

Every test streams real events (the bundled flights of a few days, through ``events_from_flights``) on a
real Redis under a stream key of its own, deleted afterwards, into a lake in a temporary folder. The fault
test kills a real ``lab stream sink`` process between its first commit and its ack, and restarts it; the
same scenario run with the sink's committed-state checks replaced must show the duplicates they prevent,
so a fault test that cannot fail is not mistaken for one that passed.

Redis: the session fixture ``redis_url`` of tests/conftest.py (never skipped).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
import redis
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from typer.testing import CliRunner

from core.errors import LabError
from core.names import FLIGHT_EVENTS_TABLE
from core.processes import free_port
from core.settings import Settings, get_settings
from ingestion import event_sink
from ingestion.declarations import load_declarations
from ingestion.event_sink import (
    CONSUMER,
    KEY_PROPERTY,
    LAST_ID_PROPERTY,
    SinkReport,
    entry_checksum,
    parse_stream_id,
    run_sink,
)
from ingestion.event_stream import connect, ensure_group, publish, stream_uri
from ingestion.events import EVENT_SCHEMA, FlightEvent, events_from_flights, iter_events, to_fields
from ingestion.storage import open_catalog
from lab.main import EXIT_USER_ERROR, app

LAB = str(Path(sys.executable).with_name("lab"))
# Three January days: about 2,700 events, each batch of them within one month (one file per commit).
DAYS = (2, 3, 4)
IDLE = 0.3  # seconds of quiet after which a test's sink has drained the stream


# --- Redis and the lake -------------------------------------------------------------------------


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = connect(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def stream(local_settings: Settings, redis_url: str, client: redis.Redis) -> Iterator[Settings]:
    """The lake of ``local_settings`` and a stream key of this test's own, deleted at the end."""
    settings = local_settings.model_copy(
        update={
            "stream_redis_url": redis_url,
            "stream_key": f"lab-test:{uuid.uuid4().hex[:12]}:flight-events",
            "sink_batch_events": 1_000,
            "sink_batch_seconds": 30.0,
        }
    )
    yield settings
    client.delete(settings.stream_key)


def with_batches(settings: Settings, events: int, seconds: float = 30.0) -> Settings:
    return settings.model_copy(update={"sink_batch_events": events, "sink_batch_seconds": seconds})


@pytest.fixture(scope="module")
def day_events() -> list[FlightEvent]:
    """The events of the bundled flights of ``DAYS`` (January 2013), in replay order.

    Read with the declaration's null tokens, as the lake holds the flights (a tailnum "NA" is null).
    """
    decl = load_declarations()["flights"]
    options = pacsv.ConvertOptions(null_values=decl.null_values, strings_can_be_null=True)
    with zipfile.ZipFile(decl.input_files()[0]) as archive, archive.open("flights.csv") as handle:
        flights = pacsv.read_csv(handle, convert_options=options)
    chosen = pc.and_(pc.equal(flights["month"], 1), pc.is_in(flights["day"], pa.array(DAYS, flights["day"].type)))
    return list(iter_events(events_from_flights(flights.filter(chosen))))


def events_table(settings: Settings) -> Table:
    return open_catalog(settings).load_table(f"{settings.raw_namespace}.flight_events")


def rows(settings: Settings) -> pa.Table:
    return events_table(settings).scan().to_arrow()


def quarantined(settings: Settings) -> pa.Table:
    table = open_catalog(settings).load_table(f"{settings.raw_namespace}.quarantine").scan().to_arrow()
    return table.filter(pc.equal(table["table_name"], f"{settings.raw_namespace}.flight_events"))


def pending(client: redis.Redis, settings: Settings) -> int:
    return int(client.xpending(settings.stream_key, settings.sink_consumer_group)["pending"])


def entry_ids(client: redis.Redis, settings: Settings) -> list[str]:
    return [_text(entry_id) for entry_id, _ in client.xrange(settings.stream_key) or []]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def drain(settings: Settings) -> SinkReport:
    return run_sink(settings, max_idle_seconds=IDLE)


def as_rows(events: list[FlightEvent]) -> list[dict[str, object]]:
    return [{name: getattr(e, name) for name in EVENT_SCHEMA.names} for e in events]


def by_id(table: pa.Table) -> list[dict[str, object]]:
    return table.select(EVENT_SCHEMA.names).sort_by("event_id").to_pylist()


def add_raw(client: redis.Redis, key: str, fields: dict[str, str]) -> str:
    return _text(client.xadd(key, fields))  # type: ignore[arg-type]  # a dict[str, str] is field data


# --- the stream side ------------------------------------------------------------------------------


def test_stream_ids_order_as_numbers_not_text() -> None:
    assert parse_stream_id("9-0") < parse_stream_id("10-0")
    assert parse_stream_id("10-2") < parse_stream_id("10-10")
    assert parse_stream_id("1712345678901-0") == (1712345678901, 0)


def test_the_stream_as_lineage_names_no_credentials() -> None:
    assert (
        stream_uri("redis://sink:hunter2@redis:6380/2", "lab:flight-events") == "redis://redis:6380/2/lab:flight-events"
    )
    assert stream_uri("redis://127.0.0.1:6379", "k") == "redis://127.0.0.1:6379/0/k"


def test_no_redis_is_one_clear_error_naming_the_url_without_its_password() -> None:
    port = free_port()
    with pytest.raises(LabError) as caught:
        connect(f"redis://:hunter2@127.0.0.1:{port}/0")
    message = str(caught.value)
    assert f"no Redis answers at redis://:***@127.0.0.1:{port}/0" in message
    assert "hunter2" not in message
    with pytest.raises(LabError, match="is not a Redis URL"):
        connect("http://127.0.0.1:6379")


def test_lab_stream_sink_without_redis_exits_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("LAB_HOME", str(tmp_path / ".lab"))
    monkeypatch.setenv("LAB_STREAM_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    before = signal.getsignal(signal.SIGINT)
    try:
        result = CliRunner().invoke(app, ["stream", "sink"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == EXIT_USER_ERROR, result.output
    assert f"no Redis answers at redis://127.0.0.1:{port}/0" in result.output
    assert "Traceback" not in result.output
    assert signal.getsignal(signal.SIGINT) is before  # the command gives Ctrl-C back


@pytest.mark.integration
def test_publish_returns_the_last_id_and_the_group_is_created_once(
    stream: Settings, client: redis.Redis, day_events: list[FlightEvent]
) -> None:
    assert publish(client, stream.stream_key, []) is None
    last = publish(client, stream.stream_key, day_events[:3])
    assert last == entry_ids(client, stream)[-1]
    ensure_group(client, stream.stream_key, "g")
    ensure_group(client, stream.stream_key, "g")  # BUSYGROUP is no error
    assert [g["name"] for g in client.xinfo_groups(stream.stream_key)] == [b"g"]


# --- exactly once ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_every_published_event_lands_once_with_its_values_and_lineage(
    stream: Settings, client: redis.Redis, day_events: list[FlightEvent]
) -> None:
    last = publish(client, stream.stream_key, day_events)
    report = drain(stream)

    data = rows(stream)
    published = len(day_events)
    assert published > 2_500
    assert data.num_rows == pc.count_distinct(data["event_id"]).as_py() == published
    assert by_id(data) == sorted(as_rows(day_events), key=lambda r: str(r["event_id"]))
    expected_batches = math.ceil(published / stream.sink_batch_events)
    assert (report.written, report.commits, report.duplicates, report.quarantined) == (
        published,
        expected_batches,
        0,
        0,
    )

    # Lineage: each row names its own entry, the checksum of what that entry carried, and its batch.
    source = stream_uri(stream.stream_redis_url, stream.stream_key)
    files = data["_source_file"].to_pylist()
    assert sorted(f.split("#", 1)[1] for f in files) == sorted(entry_ids(client, stream))
    assert all(f.startswith(f"{source}#") for f in files)
    checksums = dict(zip(data["event_id"].to_pylist(), data["_source_checksum"].to_pylist(), strict=True))
    assert all(checksums[e.event_id] == entry_checksum(to_fields(e)) for e in day_events)
    assert pc.count_distinct(data["_load_id"]).as_py() == expected_batches
    assert data["_loaded_at"].null_count == 0

    # Every snapshot says how far it covers the stream, the last one up to the last entry published.
    snapshots = events_table(stream).snapshots()
    assert len(snapshots) == expected_batches
    summaries = [s.summary for s in snapshots]
    assert all(s is not None and s[KEY_PROPERTY] == stream.stream_key for s in summaries)
    positions = [parse_stream_id(s[LAST_ID_PROPERTY]) for s in summaries if s is not None]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert summaries[-1] is not None and summaries[-1][LAST_ID_PROPERTY] == last == report.last_id

    # What a build that read a snapshot records as where the API starts reading (the features' manifest).
    from warehouse.online import STREAM_START, stream_position

    for snapshot in snapshots:
        assert snapshot.summary is not None
        read = {FLIGHT_EVENTS_TABLE: snapshot.snapshot_id}
        assert stream_position(stream, read) == snapshot.summary[LAST_ID_PROPERTY]
    other_key = stream.model_copy(update={"stream_key": f"{stream.stream_key}:other"})
    assert stream_position(other_key, {FLIGHT_EVENTS_TABLE: snapshots[-1].snapshot_id}) == STREAM_START
    assert stream_position(stream, {}) == STREAM_START  # a build that read no events covers none
    assert pending(client, stream) == 0


def _position_not_read(table: Table, key: str) -> None:
    return None


def _ids_not_read(table: Table) -> set[str]:
    return set()


# What the restarted sink trusts of what it committed before it was killed.
RESTARTS: dict[str, list[tuple[str, Callable[..., object]]]] = {
    "sound": [],
    # The snapshot summary's stream id not read: the event ids still keep the table right, but the
    # batch's malformed entry is quarantined a second time.
    "position-check-off": [("committed_position", _position_not_read)],
    # Nothing committed trusted (ack after commit alone, at least once): the batch is written twice.
    "nothing-committed-trusted": [("committed_position", _position_not_read), ("committed_event_ids", _ids_not_read)],
}
FIRST_BATCH = 200
BAD_AT = 10  # the malformed entry's place in the first batch


@pytest.mark.integration
@pytest.mark.parametrize("restart", list(RESTARTS))
def test_a_sink_killed_between_commit_and_ack_writes_nothing_twice(
    stream: Settings,
    client: redis.Redis,
    day_events: list[FlightEvent],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restart: str,
) -> None:
    settings = with_batches(stream, FIRST_BATCH, seconds=1.0)
    good = day_events[:900]
    publish(client, settings.stream_key, good[:BAD_AT])
    bad_fields = {k: v for k, v in to_fields(good[BAD_AT]).items() if k != "at"}
    bad_id = add_raw(client, settings.stream_key, bad_fields)
    publish(client, settings.stream_key, good[BAD_AT:])
    ids = entry_ids(client, settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")} | settings.to_env()

    crashed = subprocess.run(
        [LAB, "stream", "sink"],
        env=env | {"LAB_SINK_SIMULATED_CRASH": "after-commit"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "SIMULATED CRASH armed" in crashed.stderr
    # Committed and not acked: the first batch is in the table and still pending for the group.
    assert pending(client, settings) == FIRST_BATCH
    after_crash = rows(settings)
    assert after_crash.num_rows == FIRST_BATCH - 1
    snapshots = events_table(settings).snapshots()
    assert len(snapshots) == 1 and snapshots[0].summary is not None
    assert snapshots[0].summary[LAST_ID_PROPERTY] == ids[FIRST_BATCH - 1]
    assert quarantined(settings)["source_file"].to_pylist() == [
        f"{stream_uri(settings.stream_redis_url, settings.stream_key)}#{bad_id}"
    ]

    if restart == "sound":
        _restart_the_command(settings, client, env, tmp_path, expected_rows=len(good))
    else:
        for name, replacement in RESTARTS[restart]:
            monkeypatch.setattr(event_sink, name, replacement)
        report = drain(settings)
        assert report.entries == len(ids)  # the first batch read again, then the rest

    data = rows(settings)
    assert pending(client, settings) == 0
    assert pc.count_distinct(data["event_id"]).as_py() == len(good)
    assert sorted(pc.unique(data["event_id"]).to_pylist()) == sorted(e.event_id for e in good)
    quarantine = quarantined(settings)
    twice = {
        "events": data.num_rows - len(good),
        "quarantine": quarantine.num_rows - pc.count_distinct(quarantine["source_file"]).as_py(),
    }
    expected = {
        "sound": {"events": 0, "quarantine": 0},
        "position-check-off": {"events": 0, "quarantine": 1},
        "nothing-committed-trusted": {"events": FIRST_BATCH - 1, "quarantine": 1},
    }
    assert twice == expected[restart]


def _restart_the_command(
    settings: Settings, client: redis.Redis, env: dict[str, str], cwd: Path, expected_rows: int
) -> None:
    """``lab stream sink`` again, no crash this time, until it has written everything; then SIGTERM, a clean stop."""
    process = subprocess.Popen(
        [LAB, "stream", "sink"], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while rows(settings).num_rows < expected_rows or pending(client, settings):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the restarted sink did not catch up within 60 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "committed through" in out


# --- what the stream sends --------------------------------------------------------------------------


@pytest.mark.integration
def test_duplicates_count_once_malformed_entries_are_quarantined_and_late_events_land(
    stream: Settings, client: redis.Redis, day_events: list[FlightEvent]
) -> None:
    settings = with_batches(stream, 4)
    e = day_events[:8]
    key = settings.stream_key
    sent: dict[str, dict[str, str]] = {}

    def send(fields: dict[str, str]) -> str:
        entry_id = add_raw(client, key, fields)
        sent[entry_id] = fields
        return entry_id

    for event in e[:3]:
        send(to_fields(event))
    send(to_fields(e[1]))  # the same event again, in the same batch
    missing = send({k: v for k, v in to_fields(e[3]).items() if k != "at"})
    nan = send(to_fields(e[4]) | {"departure_delay_minutes": "nan"})
    for event in e[3:5]:  # the good events of the malformed ones' batch
        send(to_fields(event))
    send(to_fields(e[2]))  # again, in a later batch
    for event in (e[6], e[7], e[5]):  # e[5] became known before the two sent ahead of it
        send(to_fields(event))

    report = drain(settings)
    data = rows(settings)
    assert by_id(data) == sorted(as_rows(e), key=lambda r: str(r["event_id"]))
    assert (report.entries, report.written, report.duplicates, report.quarantined) == (12, 8, 2, 2)
    assert report.commits == 3  # 12 entries in batches of 4: every batch had a new event

    source = stream_uri(settings.stream_redis_url, settings.stream_key)
    quarantine = quarantined(settings).sort_by("source_file").to_pylist()
    assert [q["source_file"] for q in quarantine] == sorted([f"{source}#{missing}", f"{source}#{nan}"])
    by_entry = {q["source_file"].split("#", 1)[1]: q for q in quarantine}
    assert "'at': is missing" in by_entry[missing]["reason"]
    assert "'departure_delay_minutes'" in by_entry[nan]["reason"] and "finite" in by_entry[nan]["reason"]
    for entry_id in (missing, nan):
        assert json.loads(by_entry[entry_id]["raw_text"]) == sent[entry_id]
        assert by_entry[entry_id]["source_checksum"] == entry_checksum(sent[entry_id])
    assert pending(client, settings) == 0

    # A later run reads the ids already in the table: the same event sent once more still counts once.
    send(to_fields(e[0]))
    again = drain(settings)
    assert (again.entries, again.written, again.duplicates, again.commits) == (1, 0, 1, 0)
    assert rows(settings).num_rows == len(e)
    assert pending(client, settings) == 0


@pytest.mark.integration
def test_a_pending_entry_deleted_from_the_stream_is_quarantined_not_dropped(
    stream: Settings, client: redis.Redis, day_events: list[FlightEvent]
) -> None:
    key, group = stream.stream_key, stream.sink_consumer_group
    publish(client, key, day_events[:3])
    ensure_group(client, key, group)
    # Delivered to the sink's consumer (as by a run killed before its commit), then deleted.
    client.xreadgroup(group, CONSUMER, {key: ">"}, count=3)
    deleted = entry_ids(client, stream)[1]
    client.xdel(key, deleted)

    report = drain(stream)
    assert (report.written, report.quarantined) == (2, 1)
    assert sorted(rows(stream)["event_id"].to_pylist()) == sorted(e.event_id for e in (day_events[0], day_events[2]))
    (row,) = quarantined(stream).to_pylist()
    assert row["source_file"].endswith(f"#{deleted}") and "deleted from the stream" in row["reason"]
    assert pending(client, stream) == 0


# --- micro-batches ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_batch_closes_at_its_size(stream: Settings, client: redis.Redis, day_events: list[FlightEvent]) -> None:
    settings = with_batches(stream, 10)
    publish(client, settings.stream_key, day_events[:25])
    report = drain(settings)
    table = events_table(settings)
    added = [int(s.summary["added-records"]) for s in table.snapshots() if s.summary is not None]
    assert added == [10, 10, 5] and report.commits == math.ceil(25 / 10)
    assert table.inspect.files().num_rows == report.commits  # one data file per commit


@pytest.mark.integration
def test_a_batch_closes_at_its_age_though_not_full(
    stream: Settings, client: redis.Redis, day_events: list[FlightEvent]
) -> None:
    settings = with_batches(stream, 1_000, seconds=0.5)
    stop = threading.Event()
    result: list[SinkReport | BaseException] = []

    def sink() -> None:
        try:
            result.append(run_sink(settings, stop=stop))
        except BaseException as exc:  # handed to the test's thread
            result.append(exc)

    open_catalog(settings)  # created here first: two connections creating one SQLite catalog at once race
    thread = threading.Thread(target=sink)
    thread.start()
    try:
        for wave, (events, total) in enumerate([(day_events[:5], 5), (day_events[5:8], 8)], start=1):
            sent = time.monotonic()
            publish(client, settings.stream_key, events)
            while _committed_rows(settings) < total:
                assert thread.is_alive(), result
                assert time.monotonic() - sent < 10, f"batch {wave} was not closed by its age"
                time.sleep(0.05)
            assert time.monotonic() - sent >= settings.sink_batch_seconds
            assert len(events_table(settings).snapshots()) == wave
        assert thread.is_alive()  # closed by age, while the sink ran on: not by a stop or by idling
    finally:
        stop.set()
        thread.join(timeout=10)
    (report,) = result
    assert isinstance(report, SinkReport)
    assert (report.written, report.commits) == (8, 2)
    assert pending(client, settings) == 0


def _committed_rows(settings: Settings) -> int:
    try:
        snapshot = events_table(settings).current_snapshot()
    except NoSuchTableError:  # the sink has not created it yet
        return 0
    return int(snapshot.summary["total-records"]) if snapshot is not None and snapshot.summary is not None else 0
