"""The training set: read from the training mart, split by time into three windows, fingerprinted.

The mart's contract is the feature list: every column that is not the key, the
label, the outcome, the prediction horizon or a time (``*_at`` / ``*_date`` by
the naming convention) is a feature; strings are categorical and the rest
numeric. A feature added to the mart is picked up by the next training run;
the tuning search (``ml.tuning``) may leave some out, by measurement on the
validation window.

Three windows, by the flight's local date: *train* (everything before
validation), *validation* (every choice made by measurement: hyperparameters,
features, early stopping, calibration) and *test* (scored once per run, for
the reported metrics and the promotion gate; nothing is chosen on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import LabError
from core.names import TRAINING_MART
from core.settings import Settings

KEY = "flight_id"
LABEL = "is_departure_delayed"
TIME = "scheduled_departure_at"
DATE = "flight_date"  # local date of the flight: the calendar the time split follows
HORIZON = "prediction_horizon_minutes"  # how long before departure the features are computed as of
# Columns that describe the row but are not features (besides *_at and *_date).
# The horizon is one value for the whole mart: a run parameter, not a feature.
NOT_FEATURES = {KEY, LABEL, "departure_delay_minutes", "flight_month", HORIZON}
# A short frame (a first monthly run) is split by days in these shares instead of months.
DAY_SHARES = (0.6, 0.2, 0.2)

Part = Literal["train", "validation", "test"]
PARTS: tuple[Part, ...] = ("train", "validation", "test")


def is_feature(column: str) -> bool:
    return column not in NOT_FEATURES and not column.endswith(("_at", "_date"))


@dataclass(frozen=True)
class Windows:
    """First and last local flight date of each window (inclusive), and how they were cut."""

    train_start: date
    train_end: date
    validation_start: date
    validation_end: date
    test_start: date
    test_end: date
    cut_by: Literal["months", "days"]

    def bounds(self, part: Part) -> tuple[date, date]:
        return {
            "train": (self.train_start, self.train_end),
            "validation": (self.validation_start, self.validation_end),
            "test": (self.test_start, self.test_end),
        }[part]

    def params(self) -> dict[str, str]:
        """The run parameters that record the windows (ISO dates)."""
        out: dict[str, str] = {"window_cut_by": self.cut_by}
        for part in PARTS:
            start, end = self.bounds(part)
            out[f"{part}_start"], out[f"{part}_end"] = start.isoformat(), end.isoformat()
        return out


@dataclass
class TrainingSet:
    """The mart's rows, the three windows and the feature lists the model will use."""

    frame: pd.DataFrame
    categorical: list[str]
    numeric: list[str]
    windows: Windows
    excluded: list[str] = field(default_factory=list)  # features of the mart the model leaves out

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def part(self, part: Part) -> pd.DataFrame:
        return window(self.frame, *self.windows.bounds(part))

    @property
    def train(self) -> pd.DataFrame:
        return self.part("train")

    @property
    def validation(self) -> pd.DataFrame:
        return self.part("validation")

    @property
    def test(self) -> pd.DataFrame:
        return self.part("test")

    def xy(self, part: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        return part[self.features], part[LABEL].to_numpy(dtype=int)

    def without(self, excluded: Iterable[str]) -> TrainingSet:
        """The same rows and windows with ``excluded`` features left out (names the mart lacks are ignored)."""
        drop = [c for c in excluded if c in self.features]
        return TrainingSet(
            self.frame,
            [c for c in self.categorical if c not in drop],
            [c for c in self.numeric if c not in drop],
            self.windows,
            sorted({*self.excluded, *drop}),
        )


def read_mart(settings: Settings, relation: str | None = None) -> pd.DataFrame:
    """The training mart as pandas, ordered by key so fits are deterministic."""
    return prepare(query_mart(settings, relation).to_pandas(), copy=False)


def query_mart(settings: Settings, relation: str | None = None) -> pa.Table:
    """The training mart's rows as the warehouse returns them (``read_mart`` before ``prepare``)."""
    from warehouse.dbt import mart_relations
    from warehouse.query import query

    relation = relation or mart_relations(settings)[TRAINING_MART]
    return query(settings, f"select * from {relation} order by {KEY}")


def prepare(frame: pd.DataFrame, *, copy: bool = True) -> pd.DataFrame:
    """Types a model can rely on at training and serving time alike.

    Integer and boolean features become float64: at inference they may be
    missing, and an integer column cannot hold a missing value. ``copy=False``
    retypes a frame no one else holds in place.
    """
    if copy:
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


def horizon_minutes(frame: pd.DataFrame) -> int | None:
    """The mart's prediction horizon (one value for all rows), or None for a mart that declares none.

    Raises:
        LabError: the mart mixes horizons; a model trained on it would have no one meaning.
    """
    if HORIZON not in frame.columns:
        return None
    values = frame[HORIZON].dropna().unique()
    if len(values) != 1:
        raise LabError(f"the training mart holds {len(values)} prediction horizons ({sorted(values)[:5]}), not one")
    return int(values[0])


def split(frame: pd.DataFrame, validation_months: int, test_months: int) -> TrainingSet:
    """Cut the frame by local flight date into train, validation and test windows.

    The last ``test_months`` calendar months are the test window, the
    ``validation_months`` before them the validation window, and everything
    earlier trains. With too few months for that (a first monthly run), the
    distinct days are cut in the shares ``DAY_SHARES`` instead. Never a random
    split across time.

    Raises:
        LabError: too few days to give each window at least one, and validation two.
    """
    days = sorted(frame[DATE].unique())
    months = sorted({(d.year, d.month) for d in days})
    if len(months) > validation_months + test_months:
        test_start = date(*months[-test_months], 1)
        validation_start = date(*months[-(test_months + validation_months)], 1)
        cut_by: Literal["months", "days"] = "months"
    else:
        if len(days) < len(DAY_SHARES):
            raise LabError(f"the training mart spans {len(days)} day(s); three windows need at least 3")
        validation_start = days[max(1, int(len(days) * DAY_SHARES[0]))]
        test_start = days[max(2, int(len(days) * (DAY_SHARES[0] + DAY_SHARES[1])))]
        cut_by = "days"
    before_validation = [d for d in days if d < validation_start]
    in_validation = [d for d in days if validation_start <= d < test_start]
    if len(in_validation) < 2:
        raise LabError(
            f"the training mart spans {len(days)} days, which leaves {len(in_validation)} to validate on;"
            " the calibration check compares the earlier and the later half of the validation days"
        )
    windows = Windows(
        train_start=days[0],
        train_end=before_validation[-1],
        validation_start=in_validation[0],
        validation_end=in_validation[-1],
        test_start=next(d for d in days if d >= test_start),
        test_end=days[-1],
        cut_by=cut_by,
    )
    categorical, numeric = feature_columns(frame)
    return TrainingSet(frame, categorical, numeric, windows)


def window(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Rows whose local flight date lies in [start, end]."""
    return frame[(frame[DATE] >= start) & (frame[DATE] <= end)]
