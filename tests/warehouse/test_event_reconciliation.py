"""Issue 26: dbt reconciles the batch flights and the stream's events, on both targets.

The small lake here is a lake of its own: two January days of the session lake's flights
are its batch, the session lake's other tables are registered in place (read, never
written), and ``raw.flight_events`` is the table the sink creates (its own code), holding

* the events of every flight of 2013-02-01, a month the batch has not landed;
* the events of some 2013-01-02 flights, which the batch holds too;
* one of those events landed a second time, later (the model must not trust the sink).

One ``dbt build`` per target over it. The session's full builds (no events) show that the
batch rows carry exactly the ids the stream gives the same flights.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pydantic import SecretStr
from pyiceberg.expressions import And, EqualTo, In

from core.names import FLIGHT_EVENTS_TABLE, LINEAGE_COLUMNS
from core.settings import Settings
from ingestion.declarations import load_declarations
from ingestion.event_sink import ensure_events_table, events_table_schema
from ingestion.events import events_from_flights
from ingestion.storage import open_catalog
from ingestion.tables import ensure_table
from tests.helpers.fingerprints import fingerprint
from warehouse.connection import duckdb_connect
from warehouse.dbt import model_relations, run_dbt, target_dir
from warehouse.publish import publish
from warehouse.query import query

pytestmark = pytest.mark.slow

AGREEMENT_TEST = "assert_flight_events_agree_with_flights"
BATCH_DAYS = (1, 2)  # January 2013: the batch's only month, and only these days of it
OVERLAP_EVENTS = 60  # events of 2013-01-02 flights: the batch holds them too
FIRST_LANDING = datetime(2013, 2, 2, 12, 0, tzinfo=UTC)
COMPARED = ("int_flight_outcomes", "online_flight_outcomes", "stg_lab_stream__flight_events", "training_flights")


@dataclass(frozen=True)
class StreamLake:
    settings: Settings  # no target chosen yet
    batch_flights: pa.Table  # the raw flights the batch holds
    stream_only: pa.Table  # events of flights the batch does not hold
    overlap: pa.Table  # events of flights the batch holds
    duplicate_id: str  # landed twice: at FIRST_LANDING and a day later


def _flights(lake: Settings, month: int, days: tuple[int, ...]) -> pa.Table:
    table = open_catalog(lake).load_table(f"{lake.raw_namespace}.flights")
    row_filter = And(EqualTo("year", 2013), EqualTo("month", month), In("day", set(days)))
    return table.scan(row_filter=row_filter).to_arrow()


def _landed(events: pa.Table, loaded_at: datetime, first_entry: int) -> pa.Table:
    """Events as the sink's rows: the event columns, then lineage naming a stream entry each."""
    n = events.num_rows
    lineage = {
        "_source_file": [f"redis://127.0.0.1:6379/0/lab:flight-events#{first_entry + i}-0" for i in range(n)],
        "_source_checksum": [uuid.uuid4().hex for _ in range(n)],
        "_load_id": [f"test-{loaded_at:%Y%m%dT%H%M%S}"] * n,
        "_loaded_at": [loaded_at] * n,
    }
    schema = events_table_schema().as_arrow()
    columns = {name: events[name] for name in events.column_names} | lineage
    return pa.table({name: pa.array(columns[name], schema.field(name).type) for name in schema.names}, schema=schema)


@pytest.fixture(scope="module")
def stream_lake(lake_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> StreamLake:
    home = tmp_path_factory.mktemp("stream_lake") / ".lab"
    settings = Settings(home=home, sources_dirs=[], duckdb_extension_directory=lake_settings.duckdb_extension_directory)
    source, catalog = open_catalog(lake_settings), open_catalog(settings)
    namespace = settings.raw_namespace
    catalog.create_namespace_if_not_exists(namespace)
    for name in ("weather", "planes", "airlines", "airports"):
        catalog.register_table(f"{namespace}.{name}", source.load_table(f"{namespace}.{name}").metadata_location)
    batch = _flights(lake_settings, 1, BATCH_DAYS)
    ensure_table(catalog, f"{namespace}.flights", load_declarations()["flights"]).append(batch)

    stream_only = events_from_flights(_flights(lake_settings, 2, (1,)))
    second_day = events_from_flights(batch.filter(pc.equal(batch["day"], 2)))
    # Cancellations and departures alike, in a fixed order.
    cancelled = second_day.filter(pc.equal(second_day["kind"], "cancelled")).slice(0, 5)
    departed = second_day.filter(pc.equal(second_day["kind"], "departed")).slice(0, OVERLAP_EVENTS - 5)
    overlap = pa.concat_tables([cancelled, departed])
    assert cancelled.num_rows == 5 and pc.sum(pc.equal(stream_only["kind"], "cancelled")).as_py() > 0
    duplicate = stream_only.slice(0, 1)

    events = ensure_events_table(catalog, settings)
    events.append(_landed(pa.concat_tables([stream_only, overlap]), FIRST_LANDING, 1))
    events.append(_landed(duplicate, FIRST_LANDING + timedelta(days=1), 10_000))
    return StreamLake(settings, batch, stream_only, overlap, duplicate["event_id"][0].as_py())


def _build(settings: Settings) -> Settings:
    publish(settings)
    run_dbt(settings, ["build"])
    return settings


@pytest.fixture(scope="module")
def duckdb_stream(stream_lake: StreamLake) -> Settings:
    return _build(stream_lake.settings.model_copy(update={"dbt_target": "duckdb"}))


@pytest.fixture(scope="module")
def postgres_stream(stream_lake: StreamLake, pg_server_url: str) -> Iterator[Settings]:
    name = f"lab_stream_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{pg_server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
        # Not UTC, as in the session's database: the event ids' dates must not follow the session's zone.
        conn.execute(f"alter database \"{name}\" set timezone to 'America/New_York'")
    parsed = urlparse(pg_server_url)
    yield _build(
        stream_lake.settings.model_copy(
            update={
                "dbt_target": "postgres",
                "pg_database": name,
                "pg_host": parsed.hostname or "127.0.0.1",
                "pg_port": parsed.port or 5432,
                "pg_user": parsed.username or "postgres",
                "pg_password": SecretStr(parsed.password or ""),
            }
        )
    )
    with psycopg.connect(f"{pg_server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


TARGETS = ["duckdb", pytest.param("postgres", marks=pytest.mark.integration)]


@pytest.fixture(params=TARGETS)
def built(request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue(f"{request.param}_stream")  # type: ignore[no-any-return]


def _rows(settings: Settings, model: str, where: str = "true") -> dict[str, dict[str, Any]]:
    """A model's rows by event_id."""
    relation = model_relations(settings)[model]
    rows = query(settings, f"select * from {relation} where {where}").to_pylist()
    by_id = {row["event_id"]: row for row in rows}
    assert len(by_id) == len(rows), f"{model} holds an event_id twice"
    return by_id


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def test_an_event_of_a_month_not_landed_is_a_stream_outcome(built: Settings, stream_lake: StreamLake) -> None:
    late = built.late_departure_minutes
    online = _rows(built, "online_flight_outcomes")
    sources = {i: row["outcome_source"] for i, row in _rows(built, "int_flight_outcomes").items()}
    expected = stream_lake.stream_only.to_pylist()
    assert len(expected) > 500
    for event in expected:
        row = online[event["event_id"]]
        delay = event["departure_delay_minutes"]
        assert sources[event["event_id"]] == "stream"
        assert {
            "origin": row["origin"],
            "dest": row["dest"],
            "carrier": row["carrier"],
            "tailnum": row["tailnum"],
            "scheduled_departure_at": _utc(row["scheduled_departure_at"]),
            "outcome_known_at": _utc(row["outcome_known_at"]),
            "is_cancelled": row["is_cancelled"],
            "is_late": row["is_late"],
            "departure_delay_minutes": row["departure_delay_minutes"],
        } == {
            "origin": event["origin"],
            "dest": event["dest"],
            "carrier": event["carrier"],
            "tailnum": event["tailnum"],
            "scheduled_departure_at": event["scheduled_departure_at"],
            "outcome_known_at": event["at"],
            "is_cancelled": event["kind"] == "cancelled",
            "is_late": None if event["kind"] == "cancelled" or delay is None else delay > late,
            "departure_delay_minutes": delay,
        }, event["event_id"]
    assert sorted(i for i, source in sources.items() if source == "stream") == sorted(e["event_id"] for e in expected)


def test_an_event_the_batch_holds_counts_once_from_the_batch(built: Settings, stream_lake: StreamLake) -> None:
    outcomes = _rows(built, "int_flight_outcomes")
    assert len(outcomes) == stream_lake.batch_flights.num_rows + stream_lake.stream_only.num_rows
    for event_id in stream_lake.overlap["event_id"].to_pylist():
        assert outcomes[event_id]["outcome_source"] == "batch", event_id
    # Each event once in staging, the twice-landed one at its first landing.
    staged = _rows(built, "stg_lab_stream__flight_events")
    assert len(staged) == stream_lake.stream_only.num_rows + stream_lake.overlap.num_rows
    assert _utc(staged[stream_lake.duplicate_id]["_loaded_at"]) == FIRST_LANDING


def test_batch_rows_carry_the_ids_the_stream_gives_their_flights(built: Settings, stream_lake: StreamLake) -> None:
    batch = _rows(built, "int_flight_outcomes", "outcome_source = 'batch'")
    expected = events_from_flights(stream_lake.batch_flights)["event_id"].to_pylist()
    assert len(expected) == stream_lake.batch_flights.num_rows > 1_000
    assert sorted(batch) == sorted(expected)


@pytest.mark.parametrize("target", TARGETS)
def test_every_flight_of_the_full_build_has_its_stream_event_id(target: str, request: pytest.FixtureRequest) -> None:
    """Zero mismatches over the bundled year (the session's builds): the id of every batch row, from SQL and Python."""
    settings: Settings = request.getfixturevalue(f"{target}_built")
    relation = model_relations(settings)["int_flight_outcomes"]
    ids = query(settings, f"select event_id, outcome_source from {relation}")
    assert set(ids["outcome_source"].to_pylist()) == {"batch"}  # the session's lake streamed nothing
    raw = open_catalog(settings).load_table(f"{settings.raw_namespace}.flights").scan().to_arrow()
    expected = events_from_flights(raw)["event_id"]
    assert ids.num_rows == expected.length() == 336_776
    missing = set(expected.to_pylist()) ^ set(ids["event_id"].to_pylist())
    assert not missing, sorted(missing)[:5]


@pytest.mark.parametrize("target", TARGETS)
def test_a_lake_without_events_publishes_them_empty(target: str, request: pytest.FixtureRequest) -> None:
    settings: Settings = request.getfixturevalue(f"{target}_built")
    assert not open_catalog(settings).table_exists(f"{settings.raw_namespace}.{FLIGHT_EVENTS_TABLE}")
    published = query(settings, f"select * from raw.{FLIGHT_EVENTS_TABLE}")
    assert published.num_rows == 0
    assert published.column_names == events_table_schema().column_names
    assert set(LINEAGE_COLUMNS) <= set(published.column_names)


@pytest.mark.integration
def test_both_targets_give_the_same_rows(duckdb_stream: Settings, postgres_stream: Settings) -> None:
    for model in COMPARED:
        on_duckdb = query(duckdb_stream, f"select * from {model_relations(duckdb_stream)[model]}")
        on_postgres = query(postgres_stream, f"select * from {model_relations(postgres_stream)[model]}")
        assert on_duckdb.num_rows > 0, model
        assert fingerprint(on_duckdb) == fingerprint(on_postgres), model


def _agreement(settings: Settings) -> str:
    result = run_dbt(settings, ["test", "--select", AGREEMENT_TEST], check=False)
    (status,) = (st for uid, st in result.statuses.items() if uid.split(".")[-1] == AGREEMENT_TEST)
    return status


# Each a different overlapping event, altered one way, each still a well-formed event (its `at`
# follows its delay): (the assignments, which events may take them).
ALTERATIONS = {
    "a_later_delay": (
        'departure_delay_minutes = departure_delay_minutes + 7, "at" = "at" + interval \'7 minutes\'',
        "kind = 'departed' and departure_delay_minutes is not null",
    ),
    "cancelled_not_departed": (
        "kind = 'cancelled', event_id = replace(event_id, '/departed', '/cancelled'), "
        'departure_delay_minutes = null, "at" = scheduled_departure_at',
        "kind = 'departed' and departure_delay_minutes > 0",
    ),
    "departed_not_cancelled": (
        "kind = 'departed', event_id = replace(event_id, '/cancelled', '/departed'), departure_delay_minutes = 0",
        "kind = 'cancelled'",
    ),
    "another_plane": ("tailnum = 'N0TEST'", "kind = 'departed'"),
    "another_destination": ("dest = 'XXX'", "kind = 'departed'"),
    "another_scheduled_departure": (
        "scheduled_departure_at = scheduled_departure_at + interval '1 hour', \"at\" = \"at\" + interval '1 hour'",
        "kind = 'departed'",
    ),
}


def test_the_agreement_test_passes_on_agreeing_events(duckdb_stream: Settings) -> None:
    assert _agreement(duckdb_stream) == "pass"


def test_the_agreement_test_names_every_disagreeing_event(
    duckdb_stream: Settings, stream_lake: StreamLake, tmp_path: Path
) -> None:
    """On a copy of the built warehouse, raw.flight_events re-pointed at its rows with some events altered.

    Each alteration touches its own event, so the test naming exactly the altered ones shows
    every kind of disagreement caught on its own, in one dbt run.
    """
    assert duckdb_stream.duckdb_path is not None
    copy = tmp_path / duckdb_stream.duckdb_path.name  # the same name: the views name their catalog after it
    shutil.copy(duckdb_stream.duckdb_path, copy)
    settings = duckdb_stream.model_copy(update={"home": tmp_path / ".lab", "duckdb_path": copy})
    overlap = stream_lake.overlap["event_id"].to_pylist()
    altered: dict[str, str] = {}  # alteration -> the event's id once altered
    with duckdb_connect(settings, settings.duckdb_path) as conn:
        conn.execute("create table raw.altered_events as select * from raw.flight_events")
        for name, (assignments, which) in ALTERATIONS.items():
            chosen = [i for i in overlap if i not in altered.values()]  # an event altered once, and once only
            picked = f"select min(event_id) from raw.altered_events where list_contains(?, event_id) and {which}"
            row = conn.execute(
                f"update raw.altered_events set {assignments} where event_id = ({picked}) returning event_id",
                [chosen],
            ).fetchone()
            assert row is not None, f"no event to alter for {name}"
            altered[name] = row[0]
        conn.execute(f"create or replace view raw.{FLIGHT_EVENTS_TABLE} as select * from raw.altered_events")
    assert _agreement(settings) == "fail"
    rows = query(settings, f"select event_id from ({_compiled(settings)}) as disagreements")
    assert sorted(rows["event_id"].to_pylist()) == sorted(altered.values())


def _compiled(settings: Settings) -> str:
    (path,) = (target_dir(settings) / "compiled").rglob(f"{AGREEMENT_TEST}.sql")
    return path.read_text()
