"""Real 2013 flights, shaped as API requests (for the demo, the replay and the serving bench)."""

from __future__ import annotations

from datetime import date
from typing import Any

from core.names import STAGING_FLIGHTS
from core.settings import Settings
from warehouse.query import query

# One flight as a ``POST /predict`` body, from the staging model; scheduled_departure in local time.
_REQUEST_COLUMNS = """
    carrier, flight_number as flight, tailnum, origin, dest,
    strftime(flight_date, '%Y-%m-%d') || 'T'
    || lpad(cast(departure_minute_of_day // 60 as varchar), 2, '0') || ':'
    || lpad(cast(departure_minute_of_day % 60 as varchar), 2, '0') || ':00' as scheduled_departure
"""


def real_flight_requests(settings: Settings, limit: int, day: str | None = None) -> list[dict[str, Any]]:
    """Operated flights from the staging model, as ``POST /predict`` bodies.

    Each body also carries ``departure_delay_minutes`` (what really happened),
    which callers drop before sending. The order is a stable pseudo-random one.
    """
    on_day = f"and flight_date = date '{date.fromisoformat(day)}'" if day else ""
    rows = query(
        settings,
        f"""
        select {_REQUEST_COLUMNS}, departure_delay_minutes
        from {_staging(settings)}
        where not is_cancelled {on_day}
        order by hash(flight_id)
        limit {int(limit)}
        """,
    )
    return rows.to_pylist()


def scheduled_flight_requests(settings: Settings, first: date, last: date) -> list[dict[str, Any]]:
    """Every flight scheduled from ``first`` to ``last`` (local dates, inclusive), in schedule order.

    Cancelled flights too: they were scheduled, and a prediction is made
    before anyone knows. Ties at one minute are broken by carrier, flight and origin.
    """
    rows = query(
        settings,
        f"""
        select {_REQUEST_COLUMNS}
        from {_staging(settings)}
        where flight_date between date '{first}' and date '{last}'
        order by flight_date, departure_minute_of_day, carrier, flight_number, origin
        """,
    )
    return rows.to_pylist()


def _staging(settings: Settings) -> str:
    from warehouse.dbt import model_relations

    return model_relations(settings)[STAGING_FLIGHTS]
