"""Flight events (issue 26): the timeline derived from the raw flights, its parity with the marts, the wire format.

The parity check joins every derived event to ``int_flight_outcomes`` of the session's DuckDB build and
must find no difference; the same check run on events derived by deliberately wrong rules must find the
flights each rule gets wrong, so a parity check that cannot fail is not mistaken for one that passed.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from core.settings import Settings
from ingestion.declarations import load_declarations
from ingestion.events import (
    MAX_FIELD_CHARS,
    EventError,
    FlightEvent,
    events_from_flights,
    from_fields,
    iter_events,
    to_fields,
)
from ingestion.storage import open_catalog
from warehouse.dbt import model_relations
from warehouse.query import query

SOURCE_FLIGHTS = 336_776
SOURCE_CANCELLED = 8_255
KEY = ["year", "month", "day", "carrier", "flight", "origin"]
# A day of 992 flights with 192 cancellations and 96 departures known the next UTC day.
ROUND_TRIP_DAY = (9, 12)


def source_flights(column_types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """The bundled CSV with the declaration's null tokens, in string columns too.

    tests/helpers/source_csv.py:raw_flights() leaves strings as written, so 2,512 tailnums read "NA"
    there that the lake holds as null.
    """
    decl = load_declarations()["flights"]
    options = pacsv.ConvertOptions(
        null_values=decl.null_values, strings_can_be_null=True, column_types=column_types or {}
    )
    with zipfile.ZipFile(decl.input_files()[0]) as archive, archive.open("flights.csv") as handle:
        return pacsv.read_csv(handle, convert_options=options)


@pytest.fixture(scope="module")
def flights() -> pa.Table:
    return source_flights()


@pytest.fixture(scope="module")
def events(flights: pa.Table) -> pa.Table:
    return events_from_flights(flights)


def test_the_timeline_of_the_bundled_source(events: pa.Table) -> None:
    assert events.num_rows == SOURCE_FLIGHTS
    assert pc.count_distinct(events["event_id"]).as_py() == SOURCE_FLIGHTS
    cancelled = pc.equal(events["kind"], "cancelled")
    assert pc.sum(cancelled).as_py() == SOURCE_CANCELLED
    # The replay order: by the instant each outcome became known, ties by id.
    at = events["at"].to_numpy()
    assert (np.diff(at) >= np.timedelta64(0)).all()
    pairs = list(zip(events["at"].cast(pa.int64()).to_pylist(), events["event_id"].to_pylist(), strict=True))
    assert pairs == sorted(pairs)
    # A cancellation is known at its scheduled time and has no delay.
    gone = events.filter(cancelled)
    assert pc.all(pc.equal(gone["at"], gone["scheduled_departure_at"])).as_py()
    assert gone["departure_delay_minutes"].null_count == SOURCE_CANCELLED
    assert events.filter(pc.invert(cancelled))["departure_delay_minutes"].null_count == 0


def test_the_first_flight_of_the_file(flights: pa.Table) -> None:
    first = next(iter_events(events_from_flights(flights.slice(0, 1))))
    assert first.event_id == "2013-01-01/UA/1545/EWR/departed"
    assert first.scheduled_departure_at == datetime(2013, 1, 1, 10, 15, tzinfo=UTC)  # 05:15 in New York
    assert first.at == datetime(2013, 1, 1, 10, 17, tzinfo=UTC)
    assert first.departure_delay_minutes == 2.0
    assert first.tailnum == "N14228" and first.dest == "IAH"


def test_late_departures_are_stamped_past_midnight(events: pa.Table) -> None:
    """A departure 21 hours late is known the next day, not at the clock time on the scheduled day."""
    worst = events.filter(pc.equal(events["departure_delay_minutes"], pc.max(events["departure_delay_minutes"])))
    row = worst.to_pylist()[0]
    assert row["departure_delay_minutes"] == 1301.0
    assert row["at"] - row["scheduled_departure_at"] == timedelta(minutes=1301)


def test_time_hour_as_text_gives_the_same_events(events: pa.Table) -> None:
    """Read as the loader reads it (text) or as pyarrow infers it (a timestamp): the same instants."""
    as_text = source_flights({"time_hour": pa.string()})
    assert pa.types.is_string(as_text.schema.field("time_hour").type)
    assert events_from_flights(as_text).equals(events)


@pytest.mark.slow
def test_the_lake_gives_the_same_events(lake_settings: Settings, events: pa.Table) -> None:
    """The Iceberg table (int32, large strings, double delays, microsecond timestamps) and the CSV agree."""
    lake = open_catalog(lake_settings).load_table(f"{lake_settings.raw_namespace}.flights").scan().to_arrow()
    assert events_from_flights(lake).equals(events)


def test_fractional_delays_agree_between_the_table_and_the_event(flights: pa.Table) -> None:
    """The table rounds a delay to microseconds as FlightEvent does, so iter_events accepts every row."""
    few = flights.slice(0, 3)
    delays = pa.array([2.5, 1 / 3, 0.123456789], pa.float64())
    few = few.set_column(few.schema.get_field_index("dep_delay"), "dep_delay", delays)
    table = events_from_flights(few)
    replayed = list(iter_events(table))
    assert len(replayed) == 3
    by_delay = {e.departure_delay_minutes: e for e in replayed}
    assert by_delay[2.5].at - by_delay[2.5].scheduled_departure_at == timedelta(seconds=150)
    assert by_delay[1 / 3].at - by_delay[1 / 3].scheduled_departure_at == timedelta(seconds=20)
    assert by_delay[0.123456789].at - by_delay[0.123456789].scheduled_departure_at == timedelta(microseconds=7407407)


def _naive_time_hour(t: pa.Table) -> pa.Table:
    return t.set_column(t.schema.get_field_index("time_hour"), "time_hour", t["time_hour"].cast(pa.timestamp("s")))


def _first_row(**values: object) -> Callable[[pa.Table], pa.Table]:
    """Set these columns of the table's first row."""

    def spoil(t: pa.Table) -> pa.Table:
        for column, value in values.items():
            i = t.schema.get_field_index(column)
            t = t.set_column(i, column, pa.array([value, *t[column].to_pylist()[1:]], t.schema.field(i).type))
        return t

    return spoil


@pytest.mark.parametrize(
    ("spoil", "column"),
    [
        pytest.param(_naive_time_hour, "time_hour", id="zone-less-time-hour"),
        pytest.param(lambda t: t.drop_columns(["minute"]), "minute", id="missing-column"),
        pytest.param(_first_row(minute=None), "minute", id="null-minute"),
        pytest.param(_first_row(dest=None), "dest", id="null-dest"),
        pytest.param(_first_row(carrier="U/A"), "carrier", id="slash-in-carrier"),
        pytest.param(_first_row(origin="E" * 13), "origin", id="long-origin"),
        pytest.param(_first_row(month=2, day=30), "day", id="no-such-date"),
        pytest.param(_first_row(flight=-1), "flight", id="negative-flight"),
    ],
)
def test_a_flights_table_that_cannot_be_events_is_refused(
    flights: pa.Table, spoil: Callable[[pa.Table], pa.Table], column: str
) -> None:
    with pytest.raises(EventError) as caught:
        events_from_flights(spoil(flights.slice(0, 3)))
    assert caught.value.field == column
    assert repr(column) in str(caught.value)


# --- parity with the marts ----------------------------------------------------------------------


def mart_outcomes(settings: Settings) -> pa.Table:
    """Every row of int_flight_outcomes with its raw key, recovered through flight_id (a hash of that key)."""
    models = model_relations(settings)
    return query(
        settings,
        f"""
        select
            cast(extract(year from s.flight_date) as bigint) as year,
            cast(extract(month from s.flight_date) as bigint) as month,
            cast(extract(day from s.flight_date) as bigint) as day,
            s.carrier,
            cast(s.flight_number as bigint) as flight,
            s.origin,
            o.outcome_known_at,
            o.is_cancelled,
            o.departure_delay_minutes as mart_delay_minutes
        from {models["int_flight_outcomes"]} o
        join {models["stg_nycflights__flights"]} s using (flight_id)
        """,
    )


def outcome_mismatches(events: pa.Table, outcomes: pa.Table) -> dict[str, list[str]]:
    """Check -> the flights (key as text) where the events and the mart's outcomes disagree; empty when none do."""

    def keyed(t: pa.Table, present: str) -> pa.Table:
        cols = {k: t[k].cast(pa.int64() if k not in ("carrier", "origin") else pa.string()) for k in KEY}
        rest = {c: t[c] for c in t.column_names if c not in KEY}
        return pa.table({**cols, **rest, present: pa.repeat(True, t.num_rows)})

    left = keyed(events.select([*KEY, "kind", "at", "departure_delay_minutes"]), "in_events")
    right = keyed(outcomes, "in_marts")
    joined = left.join(right, keys=KEY, join_type="full outer")
    matched = pc.and_(pc.is_valid(joined["in_events"]), pc.is_valid(joined["in_marts"]))
    stamp = pa.timestamp("us", tz="UTC")
    delay, mart_delay = joined["departure_delay_minutes"], joined["mart_delay_minutes"]
    both_null = pc.and_(pc.is_null(delay), pc.is_null(mart_delay))
    checks = {
        "missing_from_marts": pc.is_null(joined["in_marts"]),
        "missing_from_events": pc.is_null(joined["in_events"]),
        "at": pc.and_(
            matched, pc.fill_null(pc.not_equal(joined["at"].cast(stamp), joined["outcome_known_at"].cast(stamp)), True)
        ),
        "kind": pc.and_(
            matched, pc.fill_null(pc.not_equal(pc.equal(joined["kind"], "cancelled"), joined["is_cancelled"]), True)
        ),
        "departure_delay_minutes": pc.and_(
            matched, pc.and_(pc.invert(both_null), pc.fill_null(pc.not_equal(delay, mart_delay), True))
        ),
    }
    found: dict[str, list[str]] = {}
    for name, bad in checks.items():
        rows = joined.filter(bad).select(KEY).to_pylist()
        if rows:
            found[name] = ["/".join(str(r[k]) for k in KEY) for r in rows]
    return found


def describe(mismatches: dict[str, list[str]]) -> str:
    return "; ".join(f"{name}: {len(keys)} (e.g. {keys[:3]})" for name, keys in mismatches.items())


@pytest.fixture(scope="module")
def outcomes(duckdb_built: Settings) -> pa.Table:
    return mart_outcomes(duckdb_built)


@pytest.mark.slow
def test_every_event_is_the_outcome_the_marts_use(events: pa.Table, outcomes: pa.Table) -> None:
    assert outcomes.num_rows == SOURCE_FLIGHTS
    mismatches = outcome_mismatches(events, outcomes)
    assert not mismatches, describe(mismatches)


def _stamped_at_schedule(flights: pa.Table) -> pa.Table:
    """Every outcome known at its scheduled time: a departure's delay counted before the plane left."""
    events = events_from_flights(flights)
    return events.set_column(events.schema.get_field_index("at"), "at", events["scheduled_departure_at"])


def _delay_from_the_clock(flights: pa.Table) -> pa.Table:
    """The delay as dep_time - sched_dep_time on the local clock: a day short for a departure past midnight."""

    def minutes(hhmm: pa.ChunkedArray) -> pa.ChunkedArray:
        hours = pc.divide(hhmm, 100)  # integer division on int columns
        return pc.add(pc.multiply(hours, 60), pc.subtract(hhmm, pc.multiply(hours, 100)))

    clock_delay = pc.subtract(minutes(flights["dep_time"]), minutes(flights["sched_dep_time"]))
    return events_from_flights(
        flights.set_column(flights.schema.get_field_index("dep_delay"), "dep_delay", clock_delay)
    )


def _cancellations_as_departures(flights: pa.Table) -> pa.Table:
    """A missing dep_time read as on time: every cancellation becomes a departure with no delay."""
    dep_time = pc.coalesce(flights["dep_time"], flights["sched_dep_time"])
    dep_delay = pc.coalesce(flights["dep_delay"], 0)
    spoiled = flights.set_column(flights.schema.get_field_index("dep_time"), "dep_time", dep_time)
    return events_from_flights(spoiled.set_column(spoiled.schema.get_field_index("dep_delay"), "dep_delay", dep_delay))


def _one_flight_lost(flights: pa.Table) -> pa.Table:
    return events_from_flights(flights.slice(1))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        # Every departure that did not leave exactly on time (336,776 - 8,255 cancelled - 16,514 at delay 0).
        pytest.param(_stamped_at_schedule, {"at": 312_007}, id="departures-stamped-at-schedule"),
        # The departures that left after local midnight: for each, the clock difference is its delay - 1,440.
        pytest.param(
            _delay_from_the_clock, {"at": 1_207, "departure_delay_minutes": 1_207}, id="delay-from-the-local-clock"
        ),
        pytest.param(
            _cancellations_as_departures,
            {"kind": SOURCE_CANCELLED, "departure_delay_minutes": SOURCE_CANCELLED},
            id="cancellations-as-departures",
        ),
        pytest.param(_one_flight_lost, {"missing_from_events": 1}, id="one-flight-lost"),
    ],
)
def test_the_parity_check_catches_a_broken_rule(
    flights: pa.Table, outcomes: pa.Table, rule: Callable[[pa.Table], pa.Table], expected: dict[str, int]
) -> None:
    mismatches = outcome_mismatches(rule(flights), outcomes)
    assert {name: len(keys) for name, keys in mismatches.items()} == expected, describe(mismatches)


# --- the wire -----------------------------------------------------------------------------------


def test_every_event_of_a_day_survives_the_wire(events: pa.Table) -> None:
    month, day = ROUND_TRIP_DAY
    one_day = events.filter(pc.and_(pc.equal(events["month"], month), pc.equal(events["day"], day)))
    replayed = list(iter_events(one_day))
    assert len(replayed) == one_day.num_rows > 900
    kinds = {e.kind for e in replayed}
    assert kinds == {"departed", "cancelled"}
    assert any(e.at.date() > e.scheduled_departure_at.date() for e in replayed)  # known the next UTC day
    assert [e.event_id for e in replayed] == one_day["event_id"].to_pylist()
    for event in replayed:
        fields = to_fields(event)
        assert all(isinstance(v, str) and len(v) <= MAX_FIELD_CHARS for v in fields.values())
        assert from_fields(fields) == event
        # A broker client hands back bytes unless told to decode.
        assert from_fields({k.encode(): v.encode() for k, v in fields.items()}) == event


DEPARTED = FlightEvent(
    kind="departed",
    year=2013,
    month=1,
    day=1,
    carrier="UA",
    flight=1545,
    origin="EWR",
    dest="IAH",
    tailnum="N14228",
    scheduled_departure_at=datetime(2013, 1, 1, 10, 15, tzinfo=UTC),
    at=datetime(2013, 1, 1, 10, 17, tzinfo=UTC),
    departure_delay_minutes=2.0,
)
CANCELLED = dataclasses.replace(
    DEPARTED, kind="cancelled", tailnum=None, at=DEPARTED.scheduled_departure_at, departure_delay_minutes=None
)
GONE = object()  # the field is left out


def test_the_wire_fields_of_an_event() -> None:
    assert to_fields(DEPARTED) == {
        "v": "1",
        "event_id": "2013-01-01/UA/1545/EWR/departed",
        "kind": "departed",
        "year": "2013",
        "month": "1",
        "day": "1",
        "carrier": "UA",
        "flight": "1545",
        "origin": "EWR",
        "dest": "IAH",
        "tailnum": "N14228",
        "scheduled_departure_at": "2013-01-01T10:15:00+00:00",
        "at": "2013-01-01T10:17:00+00:00",
        "departure_delay_minutes": "2.0",
    }
    fields = to_fields(CANCELLED)
    assert (fields["tailnum"], fields["departure_delay_minutes"]) == ("", "")
    assert from_fields(fields) == CANCELLED


def test_an_instant_in_another_zone_is_read_as_utc() -> None:
    fields = to_fields(DEPARTED) | {"at": "2013-01-01T05:17:00-05:00"}
    event = from_fields(fields)
    assert event == DEPARTED and event.at.utcoffset() == timedelta(0)
    assert to_fields(event)["at"] == "2013-01-01T10:17:00+00:00"


MALFORMED: list[tuple[str, FlightEvent, Mapping[str | bytes, object], str]] = [
    ("missing-field", DEPARTED, {"at": GONE}, "at"),
    ("missing-version", DEPARTED, {"v": GONE}, "v"),
    ("extra-field", DEPARTED, {"gate": "C71"}, "gate"),
    ("unknown-version", DEPARTED, {"v": "2"}, "v"),
    ("unknown-kind", DEPARTED, {"kind": "diverted", "event_id": "2013-01-01/UA/1545/EWR/diverted"}, "kind"),
    ("unparseable-at", DEPARTED, {"at": "yesterday"}, "at"),
    ("naive-scheduled", DEPARTED, {"scheduled_departure_at": "2013-01-01T10:15:00"}, "scheduled_departure_at"),
    ("date-only-at", DEPARTED, {"at": "2013-01-01"}, "at"),
    ("delay-not-a-number", DEPARTED, {"departure_delay_minutes": "two"}, "departure_delay_minutes"),
    ("delay-nan", DEPARTED, {"departure_delay_minutes": "nan"}, "departure_delay_minutes"),
    ("delay-inf", DEPARTED, {"departure_delay_minutes": "inf"}, "departure_delay_minutes"),
    ("delay-minus-infinity", DEPARTED, {"departure_delay_minutes": "-Infinity"}, "departure_delay_minutes"),
    ("delay-overflows", DEPARTED, {"departure_delay_minutes": "1e999"}, "departure_delay_minutes"),
    ("delay-out-of-range", DEPARTED, {"departure_delay_minutes": "1e300"}, "departure_delay_minutes"),
    ("delay-padded", DEPARTED, {"departure_delay_minutes": " 2.0"}, "departure_delay_minutes"),
    ("delay-underscored", DEPARTED, {"departure_delay_minutes": "2_0"}, "departure_delay_minutes"),
    ("delay-on-cancelled", CANCELLED, {"departure_delay_minutes": "0.0"}, "departure_delay_minutes"),
    ("departed-at-not-scheduled-plus-delay", DEPARTED, {"at": "2013-01-01T10:18:00+00:00"}, "at"),
    ("departed-no-delay-not-at-schedule", DEPARTED, {"departure_delay_minutes": ""}, "at"),
    ("cancelled-not-at-schedule", CANCELLED, {"at": "2013-01-01T10:17:00+00:00"}, "at"),
    ("id-of-another-flight", DEPARTED, {"event_id": "2013-01-01/UA/1546/EWR/departed"}, "event_id"),
    ("id-of-another-kind", DEPARTED, {"event_id": "2013-01-01/UA/1545/EWR/cancelled"}, "event_id"),
    ("id-unpadded", DEPARTED, {"event_id": "2013-1-1/UA/1545/EWR/departed"}, "event_id"),
    ("year-decimal", DEPARTED, {"year": "2013.0"}, "year"),
    ("year-empty", DEPARTED, {"year": ""}, "year"),
    ("month-fraction", DEPARTED, {"month": "1.5"}, "month"),
    ("month-13", DEPARTED, {"month": "13"}, "month"),
    ("day-word", DEPARTED, {"day": "one"}, "day"),
    ("day-32", DEPARTED, {"day": "32"}, "day"),
    ("flight-negative", DEPARTED, {"flight": "-1545"}, "flight"),
    ("flight-padded", DEPARTED, {"flight": "1545 "}, "flight"),
    ("flight-fullwidth-digits", DEPARTED, {"flight": "\uff11\uff15\uff14\uff15"}, "flight"),
    ("flight-beyond-int32", DEPARTED, {"flight": "99999999999"}, "flight"),
    ("carrier-empty", DEPARTED, {"carrier": ""}, "carrier"),
    ("carrier-with-slash", DEPARTED, {"carrier": "U/A"}, "carrier"),
    ("origin-with-space", DEPARTED, {"origin": "EW R"}, "origin"),
    ("dest-empty", DEPARTED, {"dest": ""}, "dest"),
    ("tailnum-too-long-for-a-code", DEPARTED, {"tailnum": "N" * 13}, "tailnum"),
    ("carrier-too-long-for-the-wire", DEPARTED, {"carrier": "U" * (MAX_FIELD_CHARS + 1)}, "carrier"),
    ("dest-huge-bytes", DEPARTED, {"dest": b"I" * 100_000}, "dest"),
    ("dest-not-utf8", DEPARTED, {"dest": b"\xff\xfe"}, "dest"),
    ("kind-as-str-and-bytes", DEPARTED, {b"kind": b"departed"}, "kind"),
    ("value-not-text", DEPARTED, {"flight": 1545}, "flight"),
]


def _wire(event: FlightEvent, changes: Mapping[str | bytes, object]) -> dict[str | bytes, object]:
    fields: dict[str | bytes, object] = {key: value for key, value in to_fields(event).items()}
    for key, value in changes.items():
        if value is GONE:
            del fields[key]
        else:
            fields[key] = value
    return fields


@pytest.mark.parametrize(("base", "changes", "field"), [pytest.param(b, c, f, id=name) for name, b, c, f in MALFORMED])
def test_a_malformed_event_is_refused_naming_the_field(
    base: FlightEvent, changes: Mapping[str | bytes, object], field: str
) -> None:
    with pytest.raises(EventError) as caught:
        from_fields(_wire(base, changes))  # type: ignore[arg-type]  # deliberately not str/bytes, some of them
    assert caught.value.field == field
    assert repr(field) in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 300  # a huge value is not echoed back into logs


def test_an_event_refuses_a_naive_datetime() -> None:
    with pytest.raises(EventError) as caught:
        FlightEvent(**{**DEPARTED.__dict__, "at": datetime(2013, 1, 1, 10, 17)})
    assert caught.value.field == "at"
