"""Real 2013 flights, shaped as API requests (for the demo and the serving bench)."""

from __future__ import annotations

from typing import Any

from core.names import STAGING_FLIGHTS
from core.settings import Settings


def real_flight_requests(settings: Settings, limit: int, day: str | None = None) -> list[dict[str, Any]]:
    """Operated flights from the staging model, as ``POST /predict`` bodies.

    Each body also carries ``departure_delay_minutes`` (what really happened),
    which callers drop before sending. The order is a stable pseudo-random one.
    """
    from warehouse.dbt import model_relations
    from warehouse.query import query

    relation = model_relations(settings)[STAGING_FLIGHTS]
    on_day = f"and flight_date = date '{day}'" if day else ""
    rows = query(
        settings,
        f"""
        select carrier, flight_number as flight, tailnum, origin, dest,
               strftime(flight_date, '%Y-%m-%d') || 'T'
               || lpad(cast(departure_minute_of_day // 60 as varchar), 2, '0') || ':'
               || lpad(cast(departure_minute_of_day % 60 as varchar), 2, '0') || ':00' as scheduled_departure,
               departure_delay_minutes
        from {relation}
        where not is_cancelled {on_day}
        order by hash(flight_id)
        limit {int(limit)}
        """,
    )
    return rows.to_pylist()
