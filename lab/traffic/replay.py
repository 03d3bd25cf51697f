"""Replay: real scheduled flights sent through a running API over HTTP, in schedule order.

Traffic for the monitoring loop that never fabricates a flight: the requests
are the staging model's flights of a past period (``lab.traffic.examples``), sent
to ``/predict`` one by one or to ``/predict/batch`` ``batch`` at a time,
optionally no faster than ``rate`` flights per second. The API logs every
answer as it would any other; this module only sends and counts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.errors import LabError


@dataclass
class ReplayResult:
    """What a replay sent and what came back."""

    flights: int = 0  # flights sent
    answered: int = 0  # flights answered 200
    refused: Counter[int] = field(default_factory=Counter)  # flights per other HTTP status
    first_refusal: str = ""  # the first non-200 answer: status and body, shortened
    seconds: float = 0.0


def replay(
    url: str,
    flights: list[dict[str, Any]],
    *,
    batch: int = 1,
    rate: float | None = None,
    timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Send ``flights`` to the API at ``url`` in their order; count the answers.

    Args:
        batch: flights per request; 1 uses ``/predict``, more ``/predict/batch``.
        rate: at most this many flights per second (None: as fast as the API answers).
        progress: called with the number of flights sent so far after each request.

    Raises:
        LabError: nothing answers at ``url``, or a request times out.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    result = ReplayResult()
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=timeout) as client:
        for start in range(0, len(flights), batch):
            chunk = flights[start : start + batch]
            if rate is not None:  # flight number `start` is due `start / rate` seconds in
                time.sleep(max(0.0, started + start / rate - time.monotonic()))
            try:
                if batch == 1:
                    response = client.post("/predict", json=chunk[0])
                else:
                    response = client.post("/predict/batch", json={"flights": chunk})
            except httpx.TransportError as exc:
                raise LabError(
                    f"the API at {url} did not answer after {result.flights:,} flights ({type(exc).__name__});"
                    " start it with `lab serve` or pass --start-api"
                ) from None
            result.flights += len(chunk)
            if response.status_code == 200:
                result.answered += len(chunk)
            else:
                result.refused[response.status_code] += len(chunk)
                result.first_refusal = result.first_refusal or f"{response.status_code} {response.text[:300]}"
            if progress is not None:
                progress(result.flights)
    result.seconds = time.monotonic() - started
    return result
