"""The three windows: cut by local flight date, months when there are enough, day shares otherwise."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pandas as pd
import pytest

from core.errors import LabError
from ml.data import DATE, HORIZON, PARTS, feature_columns, horizon_minutes, is_feature, split


def test_months_cut_train_validation_test(mart: Callable[..., pd.DataFrame]) -> None:
    frame = mart()
    data = split(frame, validation_months=2, test_months=2)
    w = data.windows
    assert w.cut_by == "months"
    assert (w.validation_start, w.test_start) == (date(2013, 9, 1), date(2013, 11, 1))
    assert w.train_end < w.validation_start <= w.validation_end < w.test_start <= w.test_end
    assert w.params()["validation_end"] == w.validation_end.isoformat()
    # Every row in exactly one window, each window's dates inside its bounds.
    assert sum(len(data.part(p)) for p in PARTS) == len(frame)
    for part in PARTS:
        start, end = w.bounds(part)
        dates = data.part(part)[DATE]
        assert dates.min() == start and dates.max() == end


def test_a_short_frame_is_cut_by_day_shares_in_time_order(mart: Callable[..., pd.DataFrame]) -> None:
    frame = mart(months=3, per_month=400)
    data = split(frame, validation_months=2, test_months=2)
    w = data.windows
    days = sorted(frame[DATE].unique())
    assert w.cut_by == "days"
    assert w.validation_start == days[int(len(days) * 0.6)] and w.test_start == days[int(len(days) * 0.8)]
    assert data.train[DATE].max() < data.validation[DATE].min() <= data.validation[DATE].max() < data.test[DATE].min()


def test_too_few_days_is_an_error(mart: Callable[..., pd.DataFrame]) -> None:
    frame = mart(months=1, per_month=50)
    with pytest.raises(LabError, match="three windows need at least 3"):
        split(frame[frame[DATE] == frame[DATE].min()], 2, 2)
    first_days = sorted(frame[DATE].unique())[:5]
    with pytest.raises(LabError, match="spans 5 days, which leaves 1 to validate on"):
        split(frame[frame[DATE].isin(first_days)], 2, 2)


def test_the_horizon_and_times_are_not_features(mart: Callable[..., pd.DataFrame]) -> None:
    frame = mart(months=3, per_month=100)
    categorical, numeric = feature_columns(frame)
    assert "month_of_year" in numeric and "carrier" in categorical
    for column in (HORIZON, "predicted_at", "scheduled_departure_at", "flight_date", "departure_delay_minutes"):
        assert not is_feature(column) and column not in categorical + numeric
    assert horizon_minutes(frame) == 120
    mixed = frame.assign(**{HORIZON: [60] + [120] * (len(frame) - 1)})
    with pytest.raises(LabError, match="2 prediction horizons"):
        horizon_minutes(mixed)


def test_without_leaves_features_out_and_keeps_the_windows(mart: Callable[..., pd.DataFrame]) -> None:
    data = split(mart(months=6, per_month=100), 2, 2)
    fewer = data.without(["month_of_year", "not_a_column"])
    assert "month_of_year" not in fewer.features and fewer.excluded == ["month_of_year"]
    assert fewer.windows == data.windows and len(fewer.features) == len(data.features) - 1


def test_the_windows_checksums_add_up_to_the_marts(mart: Callable[..., pd.DataFrame]) -> None:
    from core.checksum import checksum
    from ml.train import _combined

    frame = mart(months=6, per_month=200)
    data = split(frame, 2, 2)
    assert _combined(checksum(data.part(p)) for p in PARTS) == checksum(frame)
    assert _combined(checksum(data.part(p)) for p in PARTS[1:]) != checksum(frame)
