"""Predictions: one flight, or many with one model version."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import ServicesDep
from serving.schemas import BatchPrediction, BatchRequest, FlightRequest, Prediction

router = APIRouter(prefix="/predict", tags=["predict"])


@router.post("", response_model=Prediction)
async def predict(flight: FlightRequest, services: ServicesDep) -> Prediction:
    """Probability that one flight departs late (by more than the minutes the API's summary names)."""
    # Runs on the event loop: an in-memory lookup and the compiled tree walk
    # cost less than the hop to a worker thread would.
    return services.predict([flight])[0]


@router.post("/batch", response_model=BatchPrediction)
def predict_batch(body: BatchRequest, services: ServicesDep) -> BatchPrediction:
    """Predictions for many flights in one call (one model version for all)."""
    # A plain def: a large batch is scored by scikit-learn, in the thread pool, off the event loop.
    return BatchPrediction(predictions=services.predict(body.flights, batch=True))
