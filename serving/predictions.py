"""The prediction step: features per flight, one model version, every answer logged."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError

from serving.features import FeatureError, OnlineFeatures
from serving.model_store import ServedModel
from serving.prediction_log import PredictionLog, log_row
from serving.schemas import FlightRequest, ModelRef, Prediction


@dataclass(frozen=True)
class Watermark:
    """How much of the event stream the features included when a request was answered."""

    events_through: datetime | None  # the latest instant an included event became known
    stream_position: str | None  # the last stream entry applied (None: the API does not follow the stream)


def predict_flights(
    flights: list[FlightRequest],
    served: ServedModel,
    features: OnlineFeatures,
    log: PredictionLog,
    threshold: float,
    watermark: Watermark | None = None,
    *,
    batch: bool = False,
) -> list[Prediction]:
    """Score ``flights`` with one model version and one feature snapshot, queueing a log row per answer.

    ``watermark``: what of the stream the features held, said in every answer (default:
    the features' own ``events_through``, no stream position).

    ``batch``: the flights came as ``/predict/batch``'s list, so an error's
    location names the flight's index in it (even in a list of one).

    Raises:
        RequestValidationError: a flight names an unknown carrier or airport, or an
            impossible time (answered with 422, located in the request body).
    """
    rows, missing, departures = [], [], []
    for index, flight in enumerate(flights):
        try:
            row, absent, departure = features.assemble(flight)
        except FeatureError as exc:
            loc = ["body", *(["flights", index] if batch else []), exc.field]
            raise RequestValidationError(
                [{"type": "value_error", "loc": loc, "msg": str(exc), "input": exc.value}]
            ) from None
        rows.append(row)
        missing.append(absent)
        departures.append(departure)
    watermark = watermark or Watermark(features.events_through, None)
    probabilities = served.predict_proba(rows)
    now = datetime.now(UTC)
    out, logged = [], []
    for flight, row, absent, departure, probability in zip(
        flights, rows, missing, departures, probabilities, strict=True
    ):
        prediction_id = str(uuid.uuid4())
        p = float(probability)
        logged.append(
            log_row(
                prediction_id,
                now,
                served.name,
                served.version,
                flight.model_dump(),
                departure,
                {k: _jsonable(v) for k, v in row.items()},
                absent,
                p,
                p >= threshold,
            )
        )
        out.append(
            Prediction(
                prediction_id=prediction_id,
                probability=p,
                is_delayed=p >= threshold,
                threshold=threshold,
                model=ModelRef(name=served.name, version=served.version),
                scheduled_departure_utc=departure,
                features_as_of=features.as_of(departure),
                horizon_minutes=features.horizon_minutes,
                missing_features=absent,
                events_through=watermark.events_through,
                stream_position=watermark.stream_position,
            )
        )
    log.record(logged)  # before any answer leaves: rows for all of them, or a 503 for all
    return out


def _jsonable(value: Any) -> Any:
    """NaN as None, so the logged features are valid JSON."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value
