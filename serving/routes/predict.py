"""Predictions: one flight, or many with one model version."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Header

from serving.deps import ServicesDep
from serving.schemas import BatchPrediction, BatchRequest, FlightRequest, Prediction, StreamEntryId

router = APIRouter(prefix="/predict", tags=["predict"])

# A caller who published events (the replay) names the last one: the worker answering
# waits (up to LAB_SERVE_STREAM_WAIT_SECONDS) until it has applied it.
StreamWait = Annotated[
    StreamEntryId | None,
    Header(
        alias="Lab-Stream-Wait",
        description="A stream entry id (<ms>-<seq>): answer only once the features include it, or after"
        " LAB_SERVE_STREAM_WAIT_SECONDS with what they have (events_through says which).",
    ),
]


@router.post("", response_model=Prediction)
async def predict(flight: FlightRequest, services: ServicesDep, wait: StreamWait = None) -> Prediction:
    """Probability that one flight departs late (by more than the minutes the API's summary names)."""
    await services.wait_for_stream(wait)
    # Runs on the event loop: an in-memory lookup and the compiled tree walk
    # cost less than the hop to a worker thread would.
    return services.predict([flight])[0]


@router.post("/batch", response_model=BatchPrediction)
async def predict_batch(body: BatchRequest, services: ServicesDep, wait: StreamWait = None) -> BatchPrediction:
    """Predictions for many flights in one call (one model version for all)."""
    await services.wait_for_stream(wait)
    # A large batch is scored by scikit-learn, in a worker thread, off the event loop.
    predictions = await anyio.to_thread.run_sync(lambda: services.predict(body.flights, batch=True))
    return BatchPrediction(predictions=predictions)
