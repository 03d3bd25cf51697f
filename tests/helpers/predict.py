"""``/predict`` bodies built from rows of the marts, as a client would send them."""

from __future__ import annotations

from typing import Any


def predict_body(row: dict[str, Any]) -> dict[str, Any]:
    """The request for a training-mart row joined to staging's ``tailnum`` and ``flight_number``."""
    minutes = row["departure_minute_of_day"]
    return {
        "carrier": row["carrier"],
        "flight": row["flight_number"],
        "tailnum": row["tailnum"],
        "origin": row["origin"],
        "dest": row["dest"],
        "scheduled_departure": f"{row['flight_date']}T{minutes // 60:02d}:{minutes % 60:02d}:00",
    }
