"""Online features: the marts' lookup tables in memory, assembled per request.

Every feature is computed the way the training mart computes it (same local
calendar, same "latest observation strictly before the scheduled hour", same
history row for the flight's local date), so a flight of 2013 gets exactly the
features it was trained with. Lookups are dictionary reads: no I/O per request.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.settings import Settings
from serving.schemas import FlightRequest

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
    "distance_miles",
    "route_flights_window",
    "route_late_share",
    "route_mean_delay_minutes",
    "carrier_flights_window",
    "carrier_late_share",
    "carrier_mean_delay_minutes",
    "route_carrier_flights_window",
    "route_carrier_late_share",
)
PLANE_COLUMNS = ("plane_seat_count", "plane_engine_count", "plane_engine_type", "plane_manufacturer")
# The dbt var weather_lookback_hours; a test checks it against dbt_project.yml's value.
WEATHER_LOOKBACK_HOURS = 3
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
        "has_plane_record",
        "plane_age_years",
        *PLANE_COLUMNS,
        "weather_age_hours",
        *WEATHER_COLUMNS,
        *HISTORY_COLUMNS,
    )
)


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


@dataclass
class OnlineFeatures:
    """In-memory copies of the online marts, keyed the way requests look them up."""

    version: str
    planes: dict[str, dict[str, Any]]
    history: dict[tuple[str, str, str, date], dict[str, Any]]
    weather: dict[tuple[str, datetime], dict[str, Any]]
    airports: dict[str, str | None]  # code -> IANA time zone (None: not in the registry)
    carriers: set[str]

    @classmethod
    def load(cls, settings: Settings) -> OnlineFeatures:
        """Read the published online features of ``settings.dbt_target`` into memory.

        They come from the artifact a green build published (``warehouse.online``),
        every file checked against its manifest, never from the warehouse: a
        build may be running on it, or may have failed after rewriting a mart.

        Raises:
            FeaturesUnavailable: nothing is published yet (run `lab build`), or
                the artifact does not match its manifest.
        """
        from warehouse.online import FeaturesUnavailable, read_current

        published = read_current(settings)

        def rows(name: str) -> list[dict[str, Any]]:
            table = published.tables.get(name)
            if table is None:
                raise FeaturesUnavailable(f"features {published.version} hold no {name}; run `lab build`")
            return [{k: _clean(v) for k, v in r.items()} for r in table.to_pylist()]

        planes = {r["tailnum"]: r for r in rows("online_plane_features")}
        history = {
            (r["origin"], r["dest"], r["carrier"], r["as_of_date"]): r for r in rows("online_route_carrier_history")
        }
        weather = {(r["origin"], r["observed_at"].astimezone(UTC)): r for r in rows("online_origin_weather")}
        airports = {r["airport_code"]: r["time_zone"] for r in rows("online_airports")}
        carriers = {key[2] for key in history}
        log.info(
            "online features %s: %d planes, %d history rows, %d observations",
            published.version,
            len(planes),
            len(history),
            len(weather),
        )
        return cls(published.version, planes, history, weather, airports, carriers)

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

    def assemble(self, flight: FlightRequest) -> tuple[dict[str, Any], list[str], datetime]:
        """Features for one flight, the names of those missing, and the UTC departure.

        Raises:
            FeatureError: unknown carrier or airport, or an impossible time.
        """
        if flight.carrier not in self.carriers:
            raise FeatureError("carrier", flight.carrier, f"unknown carrier code {flight.carrier!r}")
        if flight.dest not in self.airports:
            raise FeatureError("dest", flight.dest, f"unknown airport code {flight.dest!r}")
        local, utc = self.departure_utc(flight)
        flight_date = local.date()
        features: dict[str, Any] = {
            "carrier": flight.carrier,
            "origin": flight.origin,
            "dest": flight.dest,
            "month_of_year": local.month,
            "day_of_week": local.isoweekday(),
            "departure_hour_local": local.hour,
            "departure_minute_of_day": local.hour * 60 + local.minute,
        }
        plane = self.planes.get(flight.tailnum) if flight.tailnum else None
        features["has_plane_record"] = plane is not None
        year_built = plane["plane_year_built"] if plane else None
        features["plane_age_years"] = flight_date.year - year_built if year_built is not None else None
        for column in PLANE_COLUMNS:
            features[column] = plane[column] if plane else None

        scheduled_hour = utc.replace(minute=0, second=0, microsecond=0)
        observation = None
        for hours in range(1, WEATHER_LOOKBACK_HOURS + 1):
            observation = self.weather.get((flight.origin, scheduled_hour - timedelta(hours=hours)))
            if observation is not None:
                break
        features["weather_age_hours"] = (
            (utc - observation["observed_at"]).total_seconds() / 3600 if observation is not None else None
        )
        for column in WEATHER_COLUMNS:
            features[column] = observation[column] if observation is not None else None

        history = self.history.get((flight.origin, flight.dest, flight.carrier, flight_date))
        for column in HISTORY_COLUMNS:
            features[column] = history[column] if history is not None else None

        missing = sorted(name for name, value in features.items() if value is None)
        return features, missing, utc
