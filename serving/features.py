"""Online features: the published outcomes and lookup tables in memory, assembled per request as of one instant.

A prediction is made ``Settings.prediction_horizon_minutes`` before the
flight's scheduled departure: at P = scheduled departure (UTC) - horizon. Every
feature is computed as of P the way the training mart computes it, counting an
outcome only once it was known, strictly before P (an operated flight's delay
once it actually departed, a cancellation at its scheduled time), so a flight
of 2013 gets exactly the features it was trained with.

The outcomes are indexed at load time: per route, carrier, route and carrier,
origin, cancelling origin and plane, the instants the outcomes became known
(int64 microseconds, ascending) beside running sums of lateness and delay. A
window [start, P) is then two binary searches and two subtractions: a request
costs a few ``searchsorted`` calls, no I/O and no scan.

Flight events (issue 26) keep the index current: ``OnlineFeatures.apply`` adds an
outcome to a per-key tail after the batch, counted exactly as its row of
``online_flight_outcomes`` would have been. One consumer applies events (``apply``
is not meant to be called from two threads at once); requests may assemble
concurrently with it.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.settings import Settings
from serving.schemas import FlightRequest
from warehouse.online import STREAM_START

if TYPE_CHECKING:
    from ingestion.events import FlightEvent

log = logging.getLogger(__name__)

WEATHER_COLUMNS = (
    "temperature_f",
    "dewpoint_f",
    "humidity_pct",
    "wind_direction_deg",
    "wind_speed_mph",
    "wind_gust_mph",
    "precipitation_in",
    "pressure_mb",
    "visibility_mi",
)
HISTORY_COLUMNS = (
    "route_flights_window",
    "route_late_share",
    "route_mean_delay_minutes",
    "carrier_flights_window",
    "carrier_late_share",
    "carrier_mean_delay_minutes",
    "route_carrier_flights_window",
    "route_carrier_late_share",
)
SAME_DAY_COLUMNS = (
    "origin_departures_2h",
    "origin_late_share_2h",
    "origin_mean_delay_minutes_2h",
    "origin_cancellations_3h",
    "plane_previous_delay_minutes",
    "plane_previous_departure_age_hours",
)
PLANE_COLUMNS = ("plane_seat_count", "plane_engine_count", "plane_engine_type", "plane_manufacturer")
# The dbt vars weather_lookback_hours and history_window_days; a test checks them against dbt_project.yml.
WEATHER_LOOKBACK_HOURS = 3
HISTORY_WINDOW_DAYS = 28
# The same-day windows at the origin (spec: departures over 2 h, cancellations over 3 h).
ORIGIN_DEPARTURES_HOURS = 2
ORIGIN_CANCELLATIONS_HOURS = 3
SCHEDULE_COLUMNS = (
    "carrier",
    "origin",
    "dest",
    "month_of_year",
    "day_of_week",
    "departure_hour_local",
    "departure_minute_of_day",
)
# Every feature `assemble` builds; a model may use any of them and nothing else.
SERVED_FEATURES = frozenset(
    (
        *SCHEDULE_COLUMNS,
        "distance_miles",
        "has_plane_record",
        "plane_age_years",
        *PLANE_COLUMNS,
        "weather_age_hours",
        *WEATHER_COLUMNS,
        *HISTORY_COLUMNS,
        *SAME_DAY_COLUMNS,
    )
)

# The published tables (warehouse.online) features are computed from.
ONLINE_TABLES = frozenset(
    ("online_flight_outcomes", "online_routes", "online_origin_weather", "online_plane_features", "online_airports")
)
# The side of a binary search over "known at" instants that leaves an instant equal
# to the bound outside what was known: every window is [start, P), every "before P" strict.
KNOWN_BEFORE: Literal["left", "right"] = "left"

_US_PER_HOUR = 3_600_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FeatureError(ValueError):
    """A request field names something the platform does not know (answered with 422)."""

    def __init__(self, field: str, value: object, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def microseconds(when: datetime) -> int:
    """``when`` (aware) as integer microseconds since the Unix epoch, the unit of every index here."""
    return (when - _EPOCH) // timedelta(microseconds=1)


# --- the append path (issue 26) ---------------------------------------------------------------
#
# Events after the batch go to a per-key tail: growable numpy buffers (capacity doubles,
# so an append is amortised O(1)). An event in time order is written past the end and
# its running sums extended by one addition. An out-of-order ("late") event waits in a
# small pending list and is merged in, with one sort and one pass of running sums, by the
# next query that reads this key, not inserted at once: inserting shifts the
# suffix of the buffers and recomputes its sums, O(n) for every late event, while a burst
# of k late events between two queries costs one O(n + k log k) merge. A merge builds new
# buffers and an in-order append writes only past what was published; queries read one
# published snapshot (a tuple swapped in one assignment), so a reader never sees a
# half-written tail, and a lock orders the writers (``apply`` and a merging query).
#
# The tail's running sums continue from the batch's totals, so a window that spans the
# end of the batch and the start of the tail subtracts the same two partial sums the
# batch of everything would (the same additions in the same order: bit-identical floats
# when the tail follows the batch in time).

_MIN_CAPACITY = 16


def _grown(buffer: np.ndarray, size: int) -> np.ndarray:
    """``buffer`` with room for at least ``size`` elements (its first elements kept)."""
    if size <= len(buffer):
        return buffer
    out = np.empty(max(size, 2 * len(buffer), _MIN_CAPACITY), dtype=buffer.dtype)
    out[: len(buffer)] = buffer
    return out


def _continued(start: float | int, values: np.ndarray, dtype: type, capacity: int) -> np.ndarray:
    """Running sums of ``values`` starting at ``start`` (``start`` first), in a buffer of ``capacity + 1``."""
    out: np.ndarray = np.empty(max(capacity, len(values)) + 1, dtype=dtype)
    used = out[: len(values) + 1]
    used[0] = start
    used[1:] = values
    np.cumsum(used, dtype=dtype, out=used)  # sequential: start + v0, then + v1, ... as appends add
    return out


def _with_pending(buffers: tuple[np.ndarray, ...], size: int, pending: list[Any]) -> list[np.ndarray]:
    """Each buffer's ``size`` used elements followed by that column of the pending (out-of-order) rows."""
    return [
        np.concatenate([buffer[:size], np.array([row[i] for row in pending], dtype=buffer.dtype)])
        for i, buffer in enumerate(buffers)
    ]


class Outcomes:
    """The outcomes of one key (a route, a carrier, ...), ordered by when they became known.

    ``late`` and ``delay`` are running sums with a leading zero, so the outcomes
    at positions [lo, hi) hold ``late[hi] - late[lo]`` late departures. Outcomes
    applied after the batch (``append``) go to a tail that windows add in.
    """

    __slots__ = ("_buffers", "_lock", "_pending", "_size", "_tail", "delay", "known_at", "late")

    def __init__(self, known_at: np.ndarray, late: np.ndarray, delay: np.ndarray) -> None:
        self.known_at = known_at  # int64 microseconds, ascending
        self.late = late  # int64, len(known_at) + 1
        self.delay = delay  # float64 minutes, len(known_at) + 1
        # Published snapshot of the tail: (known at, late sums, delay sums), sums len + 1; None when empty.
        self._tail: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # Buffers: (known at, lateness, delay, late sums, delay sums); the first _size (+1) are in use.
        self._buffers: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._size = 0
        self._pending: list[tuple[int, int, float]] = []
        self._lock = threading.Lock()

    @classmethod
    def empty(cls) -> Outcomes:
        """No outcomes yet (a key first seen in an event)."""
        return cls(np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float64))

    def append(self, known_at: int, late: int, delay: float) -> None:
        """Add one outcome known at ``known_at`` (µs): ``late`` 1 or 0, ``delay`` minutes (0.0 when unknown)."""
        with self._lock:
            if self._buffers is None:
                self._buffers = (
                    np.empty(_MIN_CAPACITY, dtype=np.int64),
                    np.empty(_MIN_CAPACITY, dtype=np.int64),
                    np.empty(_MIN_CAPACITY, dtype=np.float64),
                    _continued(int(self.late[-1]), np.empty(0, dtype=np.int64), np.int64, _MIN_CAPACITY),
                    _continued(float(self.delay[-1]), np.empty(0, dtype=np.float64), np.float64, _MIN_CAPACITY),
                )
            n = self._size
            times = self._buffers[0]
            if n and known_at < times[n - 1]:
                self._pending.append((known_at, late, delay))
                return
            times, lates, delays, late_sums, delay_sums = (
                *(_grown(b, n + 1) for b in self._buffers[:3]),
                *(_grown(b, n + 2) for b in self._buffers[3:]),
            )
            times[n], lates[n], delays[n] = known_at, late, delay
            late_sums[n + 1] = late_sums[n] + late
            delay_sums[n + 1] = delay_sums[n] + delay
            self._buffers = (times, lates, delays, late_sums, delay_sums)
            self._size = n + 1
            self._tail = (times[: n + 1], late_sums[: n + 2], delay_sums[: n + 2])

    def _merge(self) -> None:
        """Merge the pending (out-of-order) outcomes into the tail: one stable sort, one pass of sums."""
        with self._lock:
            if not self._pending or self._buffers is None:
                return
            times, lates, delays = _with_pending(self._buffers[:3], self._size, self._pending)
            order = np.argsort(times, kind="stable")
            size = len(order)
            capacity = 2 * size
            times, lates, delays = (_grown(a[order], capacity) for a in (times, lates, delays))
            late_sums = _continued(int(self.late[-1]), lates[:size], np.int64, capacity)
            delay_sums = _continued(float(self.delay[-1]), delays[:size], np.float64, capacity)
            self._buffers = (times, lates, delays, late_sums, delay_sums)
            self._size = size
            self._pending = []
            self._tail = (times[:size], late_sums[: size + 1], delay_sums[: size + 1])

    def _current_tail(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if self._pending:
            self._merge()
        return self._tail

    def window(self, start: int, end: int) -> tuple[int, int, float]:
        """(count, late count, delay sum) of the outcomes known in [start, end)."""
        lo, hi = self._positions(start, end)
        tail = self._current_tail() if self._pending or self._tail is not None else None
        if tail is None:
            return hi - lo, int(self.late[hi] - self.late[lo]), float(self.delay[hi] - self.delay[lo])
        times, late_sums, delay_sums = tail
        t_lo, t_hi = np.searchsorted(times, [start, end], side=KNOWN_BEFORE)
        t_lo, t_hi = int(t_lo), int(t_hi)
        if t_lo == t_hi:  # nothing of the tail: the batch alone, as without one
            return hi - lo, int(self.late[hi] - self.late[lo]), float(self.delay[hi] - self.delay[lo])
        count = hi - lo + t_hi - t_lo
        if hi == lo:
            return count, int(late_sums[t_hi] - late_sums[t_lo]), float(delay_sums[t_hi] - delay_sums[t_lo])
        if hi == len(self.known_at) and t_lo == 0:
            # The window runs from the batch into the tail, whose sums continue the batch's:
            # the one subtraction the batch of everything would make.
            return count, int(late_sums[t_hi] - self.late[lo]), float(delay_sums[t_hi] - self.delay[lo])
        late = (self.late[hi] - self.late[lo]) + (late_sums[t_hi] - late_sums[t_lo])
        delay = (self.delay[hi] - self.delay[lo]) + (delay_sums[t_hi] - delay_sums[t_lo])
        return count, int(late), float(delay)

    def count(self, start: int, end: int) -> int:
        """How many outcomes were known in [start, end) (the sums need not be built for this)."""
        lo, hi = self._positions(start, end)
        tail = self._current_tail() if self._pending or self._tail is not None else None
        if tail is None:
            return hi - lo
        t_lo, t_hi = np.searchsorted(tail[0], [start, end], side=KNOWN_BEFORE)
        return hi - lo + int(t_hi) - int(t_lo)

    def _positions(self, start: int, end: int) -> tuple[int, int]:
        """[lo, hi): the positions of the batch's outcomes known in [start, end)."""
        lo, hi = np.searchsorted(self.known_at, [start, end], side=KNOWN_BEFORE)
        return int(lo), int(hi)


def _rank(delay: float) -> float:
    """The order of simultaneous departures: by delay, an unknown one first."""
    return -math.inf if math.isnan(delay) else delay


class PlaneDepartures:
    """One plane's operated departures, ordered by when they were known, then by delay."""

    __slots__ = ("_buffers", "_lock", "_pending", "_size", "_tail", "delay", "known_at")

    def __init__(self, known_at: np.ndarray, delay: np.ndarray) -> None:
        self.known_at = known_at  # int64 microseconds, ascending
        self.delay = delay  # float64 minutes (NaN: unknown)
        self._tail: tuple[np.ndarray, np.ndarray] | None = None  # published (known at, delay)
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None
        self._size = 0
        self._pending: list[tuple[int, float]] = []
        self._lock = threading.Lock()

    @classmethod
    def empty(cls) -> PlaneDepartures:
        """No departures yet (a plane first seen in an event)."""
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))

    def append(self, known_at: int, delay: float) -> None:
        """Add one departure known at ``known_at`` (µs), ``delay`` minutes (NaN: unknown)."""
        with self._lock:
            if self._buffers is None:
                self._buffers = (np.empty(_MIN_CAPACITY, dtype=np.int64), np.empty(_MIN_CAPACITY, dtype=np.float64))
            n = self._size
            times, delays = self._buffers
            if n and (known_at, _rank(delay)) < (int(times[n - 1]), _rank(float(delays[n - 1]))):
                self._pending.append((known_at, delay))
                return
            times, delays = _grown(times, n + 1), _grown(delays, n + 1)
            times[n], delays[n] = known_at, delay
            self._buffers = (times, delays)
            self._size = n + 1
            self._tail = (times[: n + 1], delays[: n + 1])

    def _merge(self) -> None:
        with self._lock:
            if not self._pending or self._buffers is None:
                return
            times, delays = _with_pending(self._buffers, self._size, self._pending)
            order = np.lexsort((np.where(np.isnan(delays), -np.inf, delays), times))
            size = len(order)
            times, delays = _grown(times[order], 2 * size), _grown(delays[order], 2 * size)
            self._buffers = (times, delays)
            self._size = size
            self._pending = []
            self._tail = (times[:size], delays[:size])

    def latest_before(self, end: int) -> tuple[int, float | None] | None:
        """(known at, delay) of the last departure known before ``end``; of simultaneous ones, the largest delay."""
        index = int(np.searchsorted(self.known_at, end, side=KNOWN_BEFORE)) - 1
        if self._pending:
            self._merge()
        tail = self._tail
        if tail is not None:
            t_index = int(np.searchsorted(tail[0], end, side=KNOWN_BEFORE)) - 1
            if t_index >= 0 and (
                index < 0
                or (int(tail[0][t_index]), _rank(float(tail[1][t_index])))
                >= (int(self.known_at[index]), _rank(float(self.delay[index])))
            ):
                return int(tail[0][t_index]), _clean(float(tail[1][t_index]))
        if index < 0:
            return None
        return int(self.known_at[index]), _clean(float(self.delay[index]))


@dataclass(frozen=True)
class Observations:
    """One airport's weather observations, ordered by time."""

    observed_at: np.ndarray  # int64 microseconds, ascending
    rows: list[dict[str, Any]]

    def latest_before(self, end: int, lookback: int) -> tuple[int, dict[str, Any]] | None:
        """The last observation strictly before ``end`` and at or after ``end - lookback``."""
        index = int(np.searchsorted(self.observed_at, end, side=KNOWN_BEFORE)) - 1
        if index < 0 or int(self.observed_at[index]) < end - lookback:
            return None
        return int(self.observed_at[index]), self.rows[index]


def _timestamps(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 microseconds; a null becomes the smallest int64, before any window."""
    as_us = column.cast(pa.timestamp("us", tz="UTC"))
    return np.asarray(as_us.cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy(), dtype=np.int64)


@dataclass
class OnlineFeatures:
    """The online tables in memory, indexed the way requests look them up; features as of ``horizon_minutes``."""

    version: str
    horizon_minutes: int
    planes: dict[str, dict[str, Any]]
    distances: dict[tuple[str, str], float | None]
    weather: dict[str, Observations]
    airports: dict[str, str | None]  # code -> IANA time zone (None: not in the registry)
    carriers: set[str]
    routes: dict[tuple[str, str], Outcomes]
    carrier_outcomes: dict[str, Outcomes]
    route_carriers: dict[tuple[str, str, str], Outcomes]
    origin_departures: dict[str, Outcomes]
    origin_cancellations: dict[str, Outcomes]
    plane_departures: dict[str, PlaneDepartures]
    # The dbt var late_departure_minutes the marts' is_late was built with; ``apply`` labels events with it.
    late_departure_minutes: int = Settings.model_fields["late_departure_minutes"].default
    # The ids of the events applied (a duplicate counts once) and the latest instant one became known
    # (at load: the latest outcome of the batch).
    applied_event_ids: set[str] = field(default_factory=set)
    events_through: datetime | None = None
    # The batch's event ids (``online_flight_outcomes.event_id``) as sorted in-process hashes: an event
    # the batch already counts is not counted again. 8 bytes an outcome, not a set of strings' ~100.
    batch_event_hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # The last stream entry the batch counts (the manifest's ``stream.after``): where the stream begins.
    stream_after: str = STREAM_START

    @classmethod
    def load(cls, settings: Settings) -> OnlineFeatures:
        """Read the published online features of ``settings.dbt_target`` into memory and index them.

        They come from the artifact a green build published (``warehouse.online``),
        every file checked against its manifest, never from the warehouse: a
        build may be running on it, or may have failed after rewriting a mart.

        Raises:
            FeaturesUnavailable: nothing is published yet (run `lab build`), or
                the artifact does not match its manifest.
        """
        from warehouse.online import FeaturesUnavailable, read_current

        published = read_current(settings)
        absent = sorted(ONLINE_TABLES - published.tables.keys())
        if absent:
            raise FeaturesUnavailable(f"features {published.version} hold no {', '.join(absent)}; run `lab build`")
        features = cls.from_tables(
            published.version,
            published.tables,
            settings.prediction_horizon_minutes,
            late_departure_minutes=settings.late_departure_minutes,
        )
        # A position in another stream (or none recorded) covers nothing of this one.
        stream = published.manifest.get("stream") or {}
        if stream.get("key") == settings.stream_key and stream.get("after"):
            features.stream_after = str(stream["after"])
        return features

    @classmethod
    def from_tables(
        cls,
        version: str,
        tables: dict[str, pa.Table],
        horizon_minutes: int,
        late_departure_minutes: int = Settings.model_fields["late_departure_minutes"].default,
    ) -> OnlineFeatures:
        """Index the online tables (name -> Arrow table, every one of ``ONLINE_TABLES``) for a horizon.

        ``late_departure_minutes`` is the threshold the marts' ``is_late`` was built with;
        only events applied later (``apply``) are labelled with it.
        """

        def rows(name: str) -> list[dict[str, Any]]:
            return [{k: _clean(v) for k, v in r.items()} for r in tables[name].to_pylist()]

        planes = {r["tailnum"]: r for r in rows("online_plane_features")}
        distances = {(r["origin"], r["dest"]): r["distance_miles"] for r in rows("online_routes")}
        airports = {r["airport_code"]: r["time_zone"] for r in rows("online_airports")}
        weather = _index_weather(tables["online_origin_weather"])
        outcomes = tables["online_flight_outcomes"]
        features = cls(
            version,
            horizon_minutes,
            planes,
            distances,
            weather,
            airports,
            carriers=set(outcomes.column("carrier").unique().drop_null().to_pylist()),
            **_index_flight_outcomes(outcomes),
            late_departure_minutes=late_departure_minutes,
        )
        if "event_id" in outcomes.column_names:
            ids = outcomes.column("event_id").drop_null().to_pylist()
            features.batch_event_hashes = np.sort(np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids)))
        latest = pc.max(outcomes.column("outcome_known_at")).as_py() if outcomes.num_rows else None
        features.events_through = latest.astimezone(UTC) if latest is not None else None
        log.info(
            "online features %s as of %d min before departure: %d outcomes, %d planes, %d observations",
            version,
            horizon_minutes,
            outcomes.num_rows,
            len(planes),
            sum(len(o.rows) for o in weather.values()),
        )
        return features

    def apply(self, event: FlightEvent) -> bool:
        """Index one flight event as its row of ``online_flight_outcomes`` would have been indexed.

        A departure joins its route, carrier, route and carrier, origin and (with a
        tail number) plane; a cancellation its origin's cancellations only. As in the
        batch, an unknown delay adds nothing to the sums and is not late, but the
        departure still counts. Returns False, changing nothing, for an event id
        already applied (a replay or a redelivery) or already in the batch, True otherwise.
        """
        if event.event_id in self.applied_event_ids or self.in_batch(event.event_id):
            return False
        self.applied_event_ids.add(event.event_id)
        at = microseconds(event.at)
        self.carriers.add(event.carrier)
        if event.kind == "cancelled":
            _of(self.origin_cancellations, event.origin).append(at, 0, 0.0)
        else:
            known = event.departure_delay_minutes
            late = int(known is not None and known > self.late_departure_minutes)
            delay = 0.0 if known is None else known
            route = (event.origin, event.dest)
            for outcomes in (
                _of(self.routes, route),
                _of(self.carrier_outcomes, event.carrier),
                _of(self.route_carriers, (*route, event.carrier)),
                _of(self.origin_departures, event.origin),
            ):
                outcomes.append(at, late, delay)
            if event.tailnum is not None:
                plane = self.plane_departures.get(event.tailnum)
                if plane is None:
                    plane = self.plane_departures[event.tailnum] = PlaneDepartures.empty()
                plane.append(at, math.nan if known is None else known)
        if self.events_through is None or event.at > self.events_through:
            self.events_through = event.at
        return True

    def in_batch(self, event_id: str) -> bool:
        """Whether the batch counts the event ``event_id`` already.

        By 64-bit hash: a year of events against a year of batch (336,776 each) meets a
        false match with a probability of about 6e-9.
        """
        hashes = self.batch_event_hashes
        if not len(hashes):
            return False
        key = hash(event_id)
        at = int(np.searchsorted(hashes, key))
        return at < len(hashes) and int(hashes[at]) == key

    def departure_utc(self, flight: FlightRequest) -> tuple[datetime, datetime]:
        """(local, UTC) scheduled departure; a naive time is local at the origin."""
        zone_name = self.airports.get(flight.origin)
        if flight.origin not in self.airports:
            raise FeatureError("origin", flight.origin, f"unknown airport code {flight.origin!r}")
        if zone_name is None:
            raise FeatureError("origin", flight.origin, f"airport {flight.origin!r} has no known time zone")
        try:
            zone = ZoneInfo(zone_name)
        except ZoneInfoNotFoundError as exc:
            raise FeatureError("origin", flight.origin, f"airport {flight.origin!r} has an unknown time zone") from exc
        when = flight.scheduled_departure
        if not 1970 <= when.year <= 2100:
            raise FeatureError(
                "scheduled_departure", when.isoformat(), "scheduled_departure must be between 1970 and 2100"
            )
        local = when.replace(tzinfo=zone) if when.tzinfo is None else when.astimezone(zone)
        return local, local.astimezone(UTC)

    def as_of(self, departure_utc: datetime) -> datetime:
        """The prediction instant P for a scheduled departure: every feature counts only what was known before it."""
        return departure_utc - timedelta(minutes=self.horizon_minutes)

    def assemble(self, flight: FlightRequest) -> tuple[dict[str, Any], list[str], datetime]:
        """Features for one flight as of ``as_of(departure)``, the names of those missing, and the UTC departure.

        Raises:
            FeatureError: unknown carrier or airport, or an impossible time.
        """
        if flight.carrier not in self.carriers:
            raise FeatureError("carrier", flight.carrier, f"unknown carrier code {flight.carrier!r}")
        if flight.dest not in self.airports:
            raise FeatureError("dest", flight.dest, f"unknown airport code {flight.dest!r}")
        local, utc = self.departure_utc(flight)
        p = microseconds(self.as_of(utc))
        route = (flight.origin, flight.dest)
        features: dict[str, Any] = {
            "carrier": flight.carrier,
            "origin": flight.origin,
            "dest": flight.dest,
            "month_of_year": local.month,
            "day_of_week": local.isoweekday(),
            "departure_hour_local": local.hour,
            "departure_minute_of_day": local.hour * 60 + local.minute,
            "distance_miles": self.distances.get(route),
        }
        plane = self.planes.get(flight.tailnum) if flight.tailnum else None
        features["has_plane_record"] = plane is not None
        year_built = plane["plane_year_built"] if plane else None
        features["plane_age_years"] = local.year - year_built if year_built is not None else None
        for column in PLANE_COLUMNS:
            features[column] = plane[column] if plane else None

        observations = self.weather.get(flight.origin)
        found = observations.latest_before(p, WEATHER_LOOKBACK_HOURS * _US_PER_HOUR) if observations else None
        features["weather_age_hours"] = (p - found[0]) / _US_PER_HOUR if found else None
        for column in WEATHER_COLUMNS:
            features[column] = found[1][column] if found else None

        start = p - HISTORY_WINDOW_DAYS * 24 * _US_PER_HOUR
        for prefix, outcomes in (
            ("route", self.routes.get(route)),
            ("carrier", self.carrier_outcomes.get(flight.carrier)),
        ):
            n, late, delay = outcomes.window(start, p) if outcomes else (0, 0, 0.0)
            features[f"{prefix}_flights_window"] = n
            features[f"{prefix}_late_share"] = late / n if n else None
            features[f"{prefix}_mean_delay_minutes"] = delay / n if n else None
        route_carrier = self.route_carriers.get((*route, flight.carrier))
        n, late, _ = route_carrier.window(start, p) if route_carrier else (0, 0, 0.0)
        features["route_carrier_flights_window"] = n
        features["route_carrier_late_share"] = late / n if n else None

        departures = self.origin_departures.get(flight.origin)
        n, late, delay = departures.window(p - ORIGIN_DEPARTURES_HOURS * _US_PER_HOUR, p) if departures else (0, 0, 0.0)
        features["origin_departures_2h"] = n
        features["origin_late_share_2h"] = late / n if n else None
        features["origin_mean_delay_minutes_2h"] = delay / n if n else None
        cancellations = self.origin_cancellations.get(flight.origin)
        features["origin_cancellations_3h"] = (
            cancellations.count(p - ORIGIN_CANCELLATIONS_HOURS * _US_PER_HOUR, p) if cancellations else 0
        )

        history = self.plane_departures.get(flight.tailnum) if flight.tailnum else None
        previous = history.latest_before(p) if history else None
        features["plane_previous_delay_minutes"] = previous[1] if previous else None
        features["plane_previous_departure_age_hours"] = (p - previous[0]) / _US_PER_HOUR if previous else None

        missing = sorted(name for name, value in features.items() if value is None)
        return features, missing, utc


_Key = TypeVar("_Key")


def _of(index: dict[_Key, Outcomes], key: _Key) -> Outcomes:
    """The outcomes of ``key``, empty ones added the first time it is seen."""
    found = index.get(key)
    if found is None:
        found = index[key] = Outcomes.empty()
    return found


def _index_weather(table: pa.Table) -> dict[str, Observations]:
    """Origin -> its observations in time order."""
    by_origin: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    observed = _timestamps(table.column("observed_at"))
    for at, row in zip(observed.tolist(), table.select(["origin", *WEATHER_COLUMNS]).to_pylist(), strict=True):
        by_origin.setdefault(row["origin"], []).append((at, {k: _clean(row[k]) for k in WEATHER_COLUMNS}))
    index = {}
    for origin, found in by_origin.items():
        found.sort(key=lambda item: item[0])
        index[origin] = Observations(np.array([at for at, _ in found], dtype=np.int64), [row for _, row in found])
    return index


def _encoded(column: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    """(integer code per row, -1 for null; the value of each code) of a column."""
    encoded = column.combine_chunks().dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary.to_pylist()


def _groups(
    keys: list[tuple[np.ndarray, list[Any]]], *order: np.ndarray
) -> tuple[np.ndarray, list[tuple[Any, int, int]]]:
    """Positions sorted by key, then by ``order`` (first array first), and each key's [start, end) in them.

    A key is a column's value, or a tuple of values for several columns.
    """
    codes = [k[0] for k in keys]
    positions = np.lexsort((*reversed(order), *reversed(codes)))
    change = np.zeros(len(positions), dtype=bool)
    change[:1] = True
    for column in codes:
        ranked = column[positions]
        change[1:] |= ranked[1:] != ranked[:-1]
    starts = np.flatnonzero(change).tolist()
    groups = []
    for start, end in zip(starts, [*starts[1:], len(positions)][: len(starts)], strict=True):
        first = positions[start]
        values = tuple(values[column[first]] for column, values in keys)
        groups.append((values if len(values) > 1 else values[0], start, end))
    return positions, groups


def _running(values: np.ndarray, dtype: type) -> np.ndarray:
    """Running sums with a leading zero."""
    out: np.ndarray = np.zeros(len(values) + 1, dtype=dtype)
    np.cumsum(values, dtype=dtype, out=out[1:])
    return out


def _index_flight_outcomes(table: pa.Table) -> dict[str, Any]:
    """The per-key outcome indexes of ``OnlineFeatures`` from ``online_flight_outcomes``."""
    known_at = _timestamps(table.column("outcome_known_at"))
    known = table.column("outcome_known_at").is_valid().to_numpy(zero_copy_only=False)
    cancelled = table.column("is_cancelled").fill_null(False).to_numpy(zero_copy_only=False)
    operated = ~cancelled & known
    # As in SQL sums and means, an unknown lateness or delay adds nothing (the count still counts the flight).
    late = table.column("is_late").fill_null(False).to_numpy(zero_copy_only=False).astype(np.int64)
    delay = table.column("departure_delay_minutes").to_numpy(zero_copy_only=False).astype(np.float64)
    delay_known = ~np.isnan(delay)
    origin, dest, carrier, tailnum = (_encoded(table.column(name)) for name in ("origin", "dest", "carrier", "tailnum"))

    def outcomes(mask: np.ndarray, *keys: tuple[np.ndarray, list[Any]]) -> dict[Any, Outcomes]:
        rows = np.flatnonzero(mask)
        positions, groups = _groups([(codes[rows], values) for codes, values in keys], known_at[rows])
        ordered = rows[positions]
        times, lates, delays = known_at[ordered], late[ordered], np.where(delay_known, delay, 0.0)[ordered]
        return {
            key: Outcomes(
                times[start:end], _running(lates[start:end], np.int64), _running(delays[start:end], np.float64)
            )
            for key, start, end in groups
        }

    # A plane's departures known at the same instant sort by delay (an unknown one first),
    # so the last one before P has the largest known delay.
    rows = np.flatnonzero(operated & (tailnum[0] >= 0))
    ranked = np.where(delay_known, delay, -np.inf)
    positions, groups = _groups([(tailnum[0][rows], tailnum[1])], known_at[rows], ranked[rows])
    ordered = rows[positions]
    times, delays = known_at[ordered], delay[ordered]
    return {
        "routes": outcomes(operated, origin, dest),
        "carrier_outcomes": outcomes(operated, carrier),
        "route_carriers": outcomes(operated, origin, dest, carrier),
        "origin_departures": outcomes(operated, origin),
        "origin_cancellations": outcomes(cancelled & known, origin),
        "plane_departures": {key: PlaneDepartures(times[start:end], delays[start:end]) for key, start, end in groups},
    }
