"""The training set: read from the training mart, split by time, fingerprinted.

The mart's contract is the feature list: every column that is not the key, the
label, the outcome or a time (``*_at`` / ``*_date`` by the naming convention) is
a feature; strings are categorical and the rest numeric. A feature added to the
mart is picked up by the next training run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from core.names import TRAINING_MART
from core.settings import Settings

KEY = "flight_id"
LABEL = "is_departure_delayed"
TIME = "scheduled_departure_at"
DATE = "flight_date"  # local date of the flight: the calendar the time split follows
# Columns that describe the row but are not features (besides *_at and *_date).
# month_of_year is known before departure, but with one year of data a time split
# never trains on the months it evaluates, so the trees can only extrapolate it.
NOT_FEATURES = {KEY, LABEL, "departure_delay_minutes", "flight_month", "month_of_year"}


def is_feature(column: str) -> bool:
    return column not in NOT_FEATURES and not column.endswith(("_at", "_date"))


@dataclass
class TrainingSet:
    """The mart's rows, the split and the feature lists the model will use."""

    frame: pd.DataFrame
    categorical: list[str]
    numeric: list[str]
    eval_start: date
    eval_end: date

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    @property
    def train(self) -> pd.DataFrame:
        return self.frame[self.frame[DATE] < self.eval_start]

    @property
    def eval(self) -> pd.DataFrame:
        return window(self.frame, self.eval_start, self.eval_end)

    def xy(self, part: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        return part[self.features], part[LABEL].to_numpy(dtype=int)


def read_mart(settings: Settings, relation: str | None = None) -> pd.DataFrame:
    """The training mart as pandas, ordered by key so fits are deterministic."""
    from warehouse.dbt import mart_relations
    from warehouse.query import query

    relation = relation or mart_relations(settings)[TRAINING_MART]
    frame = query(settings, f"select * from {relation} order by {KEY}").to_pandas()
    return prepare(frame)


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Types a model can rely on at training and serving time alike.

    Integer and boolean features become float64: at inference they may be
    missing, and an integer column cannot hold a missing value.
    """
    frame = frame.copy()
    frame[TIME] = pd.to_datetime(frame[TIME], utc=True)
    frame[DATE] = pd.to_datetime(frame[DATE]).dt.date
    for column in frame.columns:
        if not is_feature(column):
            continue
        dtype = frame[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            frame[column] = frame[column].astype("float64")
        else:
            frame[column] = frame[column].astype("object").where(frame[column].notna(), None)
    frame[LABEL] = frame[LABEL].astype(bool)
    return frame


def feature_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(categorical, numeric) feature names, in mart order."""
    features = [c for c in frame.columns if is_feature(c)]
    categorical = [c for c in features if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c].dtype)]
    numeric = [c for c in features if c not in categorical]
    return categorical, numeric


def split(frame: pd.DataFrame, eval_months: int) -> TrainingSet:
    """Hold out the last ``eval_months`` calendar months; train on everything before.

    With too few months for that (a first monthly run), the last quarter of the
    days is held out instead. Never a random split across time.
    """
    days = sorted(frame[DATE].unique())
    months = sorted({d.strftime("%Y-%m") for d in days})
    if len(months) > eval_months:
        first = months[-eval_months]
        eval_start = date(int(first[:4]), int(first[5:]), 1)
    else:
        eval_start = days[int(len(days) * 0.75)]
    categorical, numeric = feature_columns(frame)
    return TrainingSet(frame, categorical, numeric, eval_start, days[-1])


def window(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Rows whose local flight date lies in [start, end]."""
    return frame[(frame[DATE] >= start) & (frame[DATE] <= end)]
