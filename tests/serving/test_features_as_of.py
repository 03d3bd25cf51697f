"""The API's as-of features on small made-up online tables, against a computation that scans every row.

The index (sorted instants, running sums, binary searches) must give what the
definitions say: windows [start, P), outcomes known exactly at P left out, a
plane's simultaneous departures resolved to the larger delay. The brute force
here reads the definitions off the spec one row at a time; the slow test
``test_features_match_mart`` holds the API to the mart on real flights.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from serving.features import SAME_DAY_COLUMNS, SERVED_FEATURES, WEATHER_COLUMNS, OnlineFeatures
from serving.schemas import FlightRequest

NEW_YORK = ZoneInfo("America/New_York")
HORIZON = 120
START = datetime(2013, 3, 1, tzinfo=UTC)
ORIGINS = ("EWR", "JFK")
DESTS = ("IAH", "ORD")
CARRIERS = ("UA", "AA", "B6")
TAILS = ("N1", "N2", "N3", None)
UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Outcome:
    origin: str
    dest: str
    carrier: str
    tailnum: str | None
    scheduled: datetime
    delay: float | None  # None: cancelled

    @property
    def cancelled(self) -> bool:
        return self.delay is None

    @property
    def known_at(self) -> datetime:
        return self.scheduled if self.delay is None else self.scheduled + timedelta(minutes=self.delay)

    @property
    def late(self) -> bool:
        return self.delay is not None and self.delay > 15


def _tables(outcomes: list[Outcome], observations: list[tuple[str, datetime, float]]) -> dict[str, pa.Table]:
    return {
        "online_flight_outcomes": pa.table(
            {
                "flight_id": [str(i) for i in range(len(outcomes))],
                "origin": [o.origin for o in outcomes],
                "dest": [o.dest for o in outcomes],
                "carrier": [o.carrier for o in outcomes],
                "tailnum": [o.tailnum for o in outcomes],
                "scheduled_departure_at": pa.array([o.scheduled for o in outcomes], UTC_TIMESTAMP),
                "outcome_known_at": pa.array([o.known_at for o in outcomes], UTC_TIMESTAMP),
                "is_cancelled": [o.cancelled for o in outcomes],
                "is_late": [None if o.cancelled else o.late for o in outcomes],
                "departure_delay_minutes": pa.array([o.delay for o in outcomes], pa.float64()),
            }
        ),
        "online_routes": pa.table(
            {"origin": ["EWR", "EWR", "JFK"], "dest": ["IAH", "ORD", "IAH"], "distance_miles": [1400.0, 719.0, 1417.0]}
        ),
        "online_origin_weather": pa.table(
            {
                "observation_id": [str(i) for i in range(len(observations))],
                "origin": [o for o, _, _ in observations],
                "observed_at": pa.array([at for _, at, _ in observations], UTC_TIMESTAMP),
                **{c: [t if c == "temperature_f" else 1.0 for _, _, t in observations] for c in WEATHER_COLUMNS},
            }
        ),
        "online_plane_features": pa.table(
            {
                "tailnum": ["N1", "N2"],
                "plane_year_built": [2001, None],
                "plane_seat_count": [150, 55],
                "plane_engine_count": [2, 2],
                "plane_engine_type": ["Turbo-fan", "Turbo-jet"],
                "plane_manufacturer": ["BOEING", "EMBRAER"],
            }
        ),
        "online_airports": pa.table(
            {
                "airport_code": ["EWR", "JFK", "IAH", "ORD"],
                "airport_name": ["Newark", "Kennedy", "Houston", "Chicago"],
                "time_zone": ["America/New_York", "America/New_York", "America/Chicago", "America/Chicago"],
                "is_in_registry": [True] * 4,
            }
        ),
    }


def _request(origin: str, dest: str, carrier: str, tailnum: str | None, departure: datetime) -> FlightRequest:
    local = departure.astimezone(NEW_YORK).replace(tzinfo=None)
    return FlightRequest(
        carrier=carrier, flight=1, tailnum=tailnum, origin=origin, dest=dest, scheduled_departure=local
    )


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _expected(outcomes: list[Outcome], weather: list[tuple[str, datetime, float]], flight: FlightRequest) -> dict:  # type: ignore[type-arg]
    """The as-of features by the spec's words, one row at a time."""
    departure = flight.scheduled_departure.replace(tzinfo=NEW_YORK).astimezone(UTC)
    p = departure - timedelta(minutes=HORIZON)
    operated = [o for o in outcomes if not o.cancelled]

    def within(o: Outcome, start: datetime) -> bool:
        return start <= o.known_at < p

    month = p - timedelta(days=28)
    route = [o for o in operated if (o.origin, o.dest) == (flight.origin, flight.dest) and within(o, month)]
    carrier = [o for o in operated if o.carrier == flight.carrier and within(o, month)]
    both = [o for o in route if o.carrier == flight.carrier]
    recent = [o for o in operated if o.origin == flight.origin and within(o, p - timedelta(hours=2))]
    cancelled = [o for o in outcomes if o.cancelled and o.origin == flight.origin and within(o, p - timedelta(hours=3))]
    plane = [o for o in operated if flight.tailnum and o.tailnum == flight.tailnum and o.known_at < p]
    previous = max(plane, key=lambda o: (o.known_at, o.delay), default=None)
    observed = [w for w in weather if w[0] == flight.origin and p - timedelta(hours=3) <= w[1] < p]
    latest = max(observed, key=lambda w: w[1], default=None)
    return {
        "route_flights_window": len(route),
        "route_late_share": _mean([o.late for o in route]),
        "route_mean_delay_minutes": _mean([o.delay for o in route]),  # type: ignore[misc]
        "carrier_flights_window": len(carrier),
        "carrier_late_share": _mean([o.late for o in carrier]),
        "carrier_mean_delay_minutes": _mean([o.delay for o in carrier]),  # type: ignore[misc]
        "route_carrier_flights_window": len(both),
        "route_carrier_late_share": _mean([o.late for o in both]),
        "origin_departures_2h": len(recent),
        "origin_late_share_2h": _mean([o.late for o in recent]),
        "origin_mean_delay_minutes_2h": _mean([o.delay for o in recent]),  # type: ignore[misc]
        "origin_cancellations_3h": len(cancelled),
        "plane_previous_delay_minutes": previous.delay if previous else None,
        "plane_previous_departure_age_hours": (p - previous.known_at).total_seconds() / 3600 if previous else None,
        "weather_age_hours": (p - latest[1]).total_seconds() / 3600 if latest else None,
        "temperature_f": latest[2] if latest else None,
    }


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)
    return bool(a == b) and type(a) is type(b)


def test_as_of_features_equal_a_row_by_row_computation() -> None:
    rng = random.Random(14)
    # Everything on whole minutes, in a few days: many outcomes are known at the same minute,
    # and many exactly at some request's P, at P - 2 h, at P - 28 d.
    minutes = 6 * 24 * 60
    outcomes = [
        Outcome(
            rng.choice(ORIGINS),
            rng.choice(DESTS),
            rng.choice(CARRIERS),
            rng.choice(TAILS),
            START + timedelta(minutes=rng.randrange(minutes)),
            None if rng.random() < 0.1 else float(rng.choice([-5, 0, 3, 15, 16, 40, 120, 400])),
        )
        for _ in range(3000)
    ]
    weather = [
        (origin, START + timedelta(minutes=m), float(m))
        for origin in ORIGINS
        for m in range(0, minutes, 45)
        if rng.random() < 0.8  # gaps: some requests have no observation within 3 h
    ]
    features = OnlineFeatures.from_tables("v", _tables(outcomes, weather), HORIZON)
    checked = 0
    for _ in range(600):
        departure = START + timedelta(minutes=rng.randrange(-60, minutes + 29 * 24 * 60))
        flight = _request(rng.choice(ORIGINS), rng.choice(DESTS), rng.choice(CARRIERS), rng.choice(TAILS), departure)
        got, missing, utc = features.assemble(flight)
        assert utc == departure
        assert set(got) == SERVED_FEATURES
        assert missing == sorted(k for k, v in got.items() if v is None)
        for name, want in _expected(outcomes, weather, flight).items():
            assert _same(got[name], want), (flight, name, got[name], want)
        checked += 1
    assert checked == 600


def test_the_window_bounds_and_ties() -> None:
    """Known exactly at P: not yet known. Known exactly at P - 28 d (or P - 2 h, P - 3 h): in the window."""
    departure = datetime(2013, 6, 14, 16, 0, tzinfo=UTC)
    p = departure - timedelta(minutes=HORIZON)

    def at(known: datetime, delay: float | None, tailnum: str | None = "N1") -> Outcome:
        scheduled = known if delay is None else known - timedelta(minutes=delay)
        return Outcome("EWR", "IAH", "UA", tailnum, scheduled, delay)

    outcomes = [
        at(p, 100.0),  # known at P: left out everywhere
        at(p - timedelta(days=28), 20.0, None),  # first instant of the 28-day window
        at(p - timedelta(days=28, microseconds=1), 30.0, None),  # just before it
        at(p - timedelta(hours=2), 16.0, None),  # first instant of the 2 h window
        at(p - timedelta(hours=1), 5.0),  # the plane: two departures known at the same instant ...
        at(p - timedelta(hours=1), 7.0),  # ... the larger delay is its previous one
        at(p - timedelta(hours=3), None),  # a cancellation at the start of the 3 h window
        at(p, None),  # ... and one at P, not yet known
    ]
    weather = [("EWR", p, 1.0), ("EWR", p - timedelta(hours=3), 2.0)]
    features = OnlineFeatures.from_tables("v", _tables(outcomes, weather), HORIZON)
    got, _, _ = features.assemble(_request("EWR", "IAH", "UA", "N1", departure))
    assert got["route_flights_window"] == 4 and got["route_mean_delay_minutes"] == (20 + 16 + 5 + 7) / 4
    assert got["route_late_share"] == 2 / 4
    assert got["origin_departures_2h"] == 3 and got["origin_mean_delay_minutes_2h"] == (16 + 5 + 7) / 3
    assert got["origin_cancellations_3h"] == 1
    assert got["plane_previous_delay_minutes"] == 7.0 and got["plane_previous_departure_age_hours"] == 1.0
    assert got["weather_age_hours"] == 3.0 and got["temperature_f"] == 2.0
    assert got["distance_miles"] == 1400.0 and got["plane_age_years"] == 2013 - 2001
    assert features.as_of(departure) == p

    # Nothing known yet: counts are 0, shares, means and the plane's previous departure missing.
    early, missing, _ = features.assemble(_request("JFK", "ORD", "UA", "N9", p - timedelta(days=60)))
    assert early["carrier_flights_window"] == early["origin_departures_2h"] == early["origin_cancellations_3h"] == 0
    assert {"route_late_share", "origin_late_share_2h", "distance_miles", *SAME_DAY_COLUMNS[4:]} <= set(missing)


@pytest.mark.parametrize("horizon", [60, 120, 240])
def test_the_horizon_moves_the_instant(horizon: int) -> None:
    departure = datetime(2013, 6, 14, 16, 0, tzinfo=UTC)
    known = departure - timedelta(minutes=90)
    outcomes = [Outcome("EWR", "IAH", "UA", "N1", known - timedelta(minutes=10), 10.0)]
    features = OnlineFeatures.from_tables("v", _tables(outcomes, []), horizon)
    got, _, _ = features.assemble(_request("EWR", "IAH", "UA", "N1", departure))
    assert got["origin_departures_2h"] == (1 if horizon < 90 else 0)
    assert features.as_of(departure) == departure - timedelta(minutes=horizon)
