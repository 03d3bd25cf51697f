"""A small synthetic training mart with the real one's shape, for tests that need many fits quickly."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from ml.data import prepare


def synthetic_mart(months: int = 12, per_month: int = 1500, seed: int = 0) -> pd.DataFrame:
    """``months`` months of flights from January 2013 whose lateness depends on two features and the carrier."""
    rng = np.random.default_rng(seed)
    n = months * per_month
    month = np.repeat(np.arange(1, months + 1), per_month)
    day = rng.integers(1, 29, n)
    hour = rng.integers(5, 23, n)
    local = pd.to_datetime({"year": 2013, "month": month, "day": day, "hour": hour})
    scheduled = local.dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    carrier = rng.choice(["AA", "B6", "DL", "UA"], n)
    signal = rng.normal(size=n)
    noise = rng.normal(size=n)
    logit = -1.4 + 0.9 * signal + 0.05 * (hour - 12) + np.where(carrier == "B6", 0.5, 0.0) + 0.2 * noise
    late = rng.random(n) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame(
        {
            "flight_id": [f"f{i:06d}" for i in range(n)],
            "flight_date": local.dt.date,
            "flight_month": local.dt.strftime("%Y-%m"),
            "scheduled_departure_at": scheduled,
            "predicted_at": scheduled - pd.Timedelta(minutes=120),
            "prediction_horizon_minutes": 120,
            "departure_delay_minutes": np.where(late, 30.0, 0.0),
            "is_departure_delayed": late,
            "carrier": carrier,
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "month_of_year": month,
            "departure_hour_local": hour,
            "signal": signal,
            "noise": noise,
        }
    )
    return prepare(frame.sort_values("flight_id", ignore_index=True))


@pytest.fixture
def mart() -> Callable[..., pd.DataFrame]:
    return synthetic_mart


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Fits on the small synthetic mart on one OpenMP thread.

    Their trees are tiny, so each boosting iteration is mostly a parallel
    region's start-up; with the machine's cores busy, a second thread makes
    them wait for it (measured: the same search 0.5 s alone, 36 s beside other jobs).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield
