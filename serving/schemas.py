"""Request and response bodies of the prediction API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Code2 = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2}$", to_upper=True)]
Code3 = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{3,4}$", to_upper=True)]


# A Redis stream entry id, <milliseconds>-<sequence>; the digits capped so it parses to int64s.
StreamEntryId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,19}-[0-9]{1,19}$")]


class FlightRequest(BaseModel):
    """A flight as a client knows it before departure."""

    # No float field today; allow_inf_nan=False keeps NaN and Infinity a 422 should one be added.
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "carrier": "UA",
                    "flight": 1545,
                    "tailnum": "N14228",
                    "origin": "EWR",
                    "dest": "IAH",
                    "scheduled_departure": "2013-01-01T05:15:00",
                }
            ]
        },
    )

    carrier: Code2 = Field(description="Two-character airline code, e.g. UA.")
    flight: int = Field(ge=1, le=9999, description="Flight number.")
    tailnum: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,8}$", to_upper=True)] | None = Field(
        default=None, description="Plane tail number, if known."
    )
    origin: Code3 = Field(description="FAA code of the departure airport.")
    dest: Code3 = Field(description="FAA code of the arrival airport.")
    scheduled_departure: datetime = Field(
        description="Scheduled departure; without an offset it is local time at the origin airport."
    )


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    """The model's answer for one flight."""

    prediction_id: str
    probability: float = Field(
        ge=0.0,
        le=1.0,
        description="Probability of departing late: by more than the minutes the API's summary names"
        " (LAB_LATE_DEPARTURE_MINUTES).",
    )
    is_delayed: bool = Field(description="probability >= threshold")
    threshold: float
    model: ModelRef
    scheduled_departure_utc: datetime
    features_as_of: datetime = Field(
        description="The prediction instant: scheduled departure minus the horizon. Every feature counts only"
        " what was known strictly before it."
    )
    horizon_minutes: int = Field(description="How long before scheduled departure the prediction is made.")
    missing_features: list[str] = Field(
        description="Features the model received as missing (it handles them natively)."
    )
    events_through: datetime | None = Field(
        default=None,
        description="The watermark: the latest instant a flight outcome the features include became known (from"
        " the batch or the event stream). An outcome known later was not counted, even if it was known before"
        " features_as_of.",
    )
    stream_position: str | None = Field(
        default=None,
        description="The last event stream entry the features include (null: this API does not follow the"
        " stream). Send it back as Lab-Stream-Wait to be answered by features that include it.",
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    flights: list[FlightRequest] = Field(min_length=1, max_length=1000)


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class Health(BaseModel):
    status: str


class RefusedModel(BaseModel):
    """A version the registry named champion that failed the API's checks and is not served."""

    version: str
    reason: str
    refused_at: datetime


class LogStatus(BaseModel):
    """The prediction log's health: whether answers can be logged, and what waits where."""

    status: Literal["ok", "degraded", "failing"] = Field(
        description="ok: rows reach the log database. degraded: they are kept in the local spool until it is back"
        " (answers are still given). failing: they cannot be kept; /predict answers 503."
    )
    backlog: int = Field(description="Answered rows held in memory only, not yet in the database or the spool.")
    spooled: int = Field(description="Rows in the local spool, waiting to be replayed into the database.")
    written: int = Field(description="Rows this process has put in the database.")
    lost: int = Field(description="Answered rows neither written nor spooled (only ever at shutdown).")
    refusal: str | None = Field(default=None, description="Why answers are refused, when failing.")
    last_error: str | None = Field(default=None, description="The last database or spool error.")


class StreamInfo(BaseModel):
    """This worker's reading of the flight event stream."""

    following: bool = Field(description="Whether this API follows the stream (LAB_SERVE_FOLLOW_STREAM).")
    connected: bool = Field(description="Whether the last read of Redis succeeded; false: the features age.")
    position: str | None = Field(description="The last stream entry applied (or where the batch ends).")
    events_through: datetime | None = Field(
        description="The watermark: the latest instant an event applied became known."
    )
    lag_seconds: float | None = Field(description="How far the stream's newest entry is ahead of the position.")
    applied: int = Field(description="Events applied since the features were loaded.")
    duplicates: int = Field(description="Entries whose event was already counted (a redelivery, or in the batch).")
    malformed: int = Field(description="Entries that are not a valid event, skipped (the lake sink quarantines them).")
    errors: int = Field(description="Failed reads of Redis.")
    gap: bool = Field(description="Entries after the batch's position were trimmed before they were read.")
    last_error: str | None = None


class Readiness(BaseModel):
    status: str = Field(
        description="ready (200); degraded (200: answers go on, but the event stream is unreadable or has a"
        " gap, so the features age); loading: no model may serve yet, or not-logging (503)."
    )
    model_version: str | None
    features_version: str | None
    refused: RefusedModel | None = None
    log: LogStatus | None = None
    features_missing: str | None = Field(
        default=None, description="Why no online features are loaded yet (e.g. none published: run `lab build`)."
    )
    stream: StreamInfo | None = None


class ModelInfo(BaseModel):
    name: str
    version: str
    alias: str
    run_id: str
    features: list[str]
    metrics: dict[str, float]
    lineage: dict[str, str]
    refused: RefusedModel | None = Field(
        default=None, description="The last champion that failed the API's checks (the served version stays)."
    )


class ReloadResult(BaseModel):
    previous_version: str | None
    version: str | None  # None: no model may serve yet (the champion was refused)
    features_version: str
