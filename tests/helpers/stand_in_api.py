"""`lab serve` with a stand-in model and stand-in features: the real API process, minus training.

The prediction log's tests need answers, not good ones: a trained champion and
built marts cost minutes. Everything else is the real thing: the CLI command,
uvicorn and its signal handling, the app's lifespan, the services, the routes
and the prediction log. Only ``Services.reload`` (which would read the
registry and the marts) and MLflow's set-up are replaced.

Run as ``python -m tests.helpers.stand_in_api --host 127.0.0.1 --port N`` from the
project's root with the settings in ``LAB_*`` variables; or call ``install()`` in process.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

VERSION = "1"
FEATURES_VERSION = "stand-in"


class StandInTrees:
    """The compiled-trees interface ``ServedModel.predict_proba`` calls for small batches."""

    def encode(self, rows: list[dict[str, Any]], categorical: list[str], numeric: list[str]) -> list[dict[str, Any]]:
        return rows

    def predict_proba(self, rows: list[dict[str, Any]]) -> list[float]:
        return [(row["departure_minute_of_day"] % 97) / 97 for row in rows]


class StandInFeatures:
    """What ``predict_flights`` asks of the features: ``assemble``, ``as_of``, the horizon, a version, a watermark."""

    version = FEATURES_VERSION
    horizon_minutes = 120
    events_through: datetime | None = None

    def as_of(self, departure_utc: datetime) -> datetime:
        return departure_utc - timedelta(minutes=self.horizon_minutes)

    def assemble(self, flight: Any) -> tuple[dict[str, Any], list[str], datetime]:
        when = flight.scheduled_departure
        utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        row = {
            "carrier": flight.carrier,
            "origin": flight.origin,
            "dest": flight.dest,
            "departure_minute_of_day": when.hour * 60 + when.minute,
        }
        return row, [], utc


def install() -> None:
    """Make every ``Services`` in this process serve the stand-ins; MLflow is never touched."""
    import ml.tracking
    from serving import services
    from serving.model_store import ServedModel
    from serving.schemas import ReloadResult

    model = ServedModel(
        name="stand-in",
        version=VERSION,
        run_id="none",
        model=None,
        categorical=["carrier", "origin", "dest"],
        numeric=["departure_minute_of_day"],
        metrics={},
        lineage={},
        compiled=StandInTrees(),  # type: ignore[arg-type]
    )

    def reload(self: services.Services, *, features: bool = True) -> ReloadResult:
        self.snapshot = services.Snapshot(model, StandInFeatures())  # type: ignore[arg-type]
        return ReloadResult(previous_version=None, version=VERSION, features_version=FEATURES_VERSION)

    ml.tracking.configure_mlflow = lambda settings: "0"  # type: ignore[assignment]
    services.Services.reload = reload  # type: ignore[method-assign]


def flight(number: int) -> dict[str, Any]:
    """A /predict body; ``number`` varies it."""
    minute = number % 1440
    return {
        "carrier": "UA",
        "flight": 1 + number % 9999,
        "tailnum": "N14228",
        "origin": "EWR",
        "dest": "IAH",
        "scheduled_departure": f"2013-06-01T{minute // 60:02d}:{minute % 60:02d}:00",
    }


if __name__ == "__main__":
    install()
    from lab.main import app

    app(["serve", *sys.argv[1:]])
