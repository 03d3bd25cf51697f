"""The dbt monitoring models, built on real flights: every figure against scipy / scikit-learn, both engines alike.

A month of real November 2013 flights is "predicted": the model input is the
training mart's row (some inputs blanked, some destinations never seen),
the probability a noisy function of the real outcome (rounded, so scores tie),
cancelled flights included, and some flights asked about twice. The log lands
in a lake of its own (a copy of the session's catalog: flights are read in
place, predictions written beside them) and the monitoring models build on it.

Every expected figure is recomputed here in pandas from the rows we logged and
the profile we wrote, with no SQL: labels from the mart, bins by numpy, distances
by scipy, performance by scikit-learn.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from core.settings import Settings
from ml import profile
from ml.data import feature_columns, prepare
from monitoring import monitor
from serving.prediction_log import log_row, metadata, predictions
from warehouse import reference
from warehouse.dbt import model_relations, run_dbt
from warehouse.publish import publish
from warehouse.query import query

pytestmark = pytest.mark.slow

VERSION = "7"
MONTH = "2013-11"
TOLERANCE = 1e-9
MARTS = (
    "stg_lab_api__predictions",
    "mon_predictions_with_outcomes",
    "mon_feature_bins",
    "mon_feature_drift",
    "mon_performance",
    "mon_monthly_summary",
)


def _isolated(lake: Settings, home: Path, **update: Any) -> Settings:
    """The session's lake under a home of its own: the catalog copied, every new file written under ``home``."""
    home.mkdir(parents=True)
    shutil.copy(lake.catalog_uri.removeprefix("sqlite:///"), home / "catalog.db")
    return lake.model_copy(
        update={
            "home": home,
            "catalog_uri": f"sqlite:///{home / 'catalog.db'}",
            "warehouse_uri": (home / "warehouse").as_uri(),
            "landing_uri": (home / "landing").as_uri(),
            "duckdb_path": home / "warehouse.duckdb",
            "prediction_log_url": f"sqlite:///{home / 'predictions.db'}",
            "monitor_reports_dir": home / "monitoring",
            **update,
        }
    )


def _mart_month(settings: Settings, month: str, limit: int) -> pd.DataFrame:
    relation = model_relations(settings, "marts")["training_flights"]
    frame = query(
        settings,
        f"select * from {relation} where flight_month = '{month}' order by flight_id limit {limit}",
    ).to_pandas()
    return prepare(frame)


def _cancelled(settings: Settings, month: str, limit: int) -> pd.DataFrame:
    relation = model_relations(settings, "staging")["stg_nycflights__flights"]
    return query(
        settings,
        f"select carrier, flight_number, origin, dest, tailnum, scheduled_departure_at from {relation} "
        f"where is_cancelled and flight_month = '{month}' order by flight_id limit {limit}",
    ).to_pandas()


class Case:
    """The logged predictions and the reference, as pandas: what every expected figure is computed from."""

    def __init__(self, built: Settings) -> None:
        rng = np.random.default_rng(20131101)
        reference_rows = _mart_month(built, "2013-03", 4000)
        current = _mart_month(built, MONTH, 2500)
        self.categorical, self.numeric = feature_columns(current)
        self.features = self.categorical + self.numeric
        inputs = current[self.features].astype(object).where(current[self.features].notna(), None)
        # Inputs the API could not look up: an unknown plane's age, weather gaps.
        inputs.loc[rng.random(len(inputs)) < 0.2, "wind_gust_mph"] = None
        inputs.loc[rng.random(len(inputs)) < 0.1, "plane_age_years"] = None
        inputs.loc[inputs.index[:15], "dest"] = "ZZZ"  # never seen in training: the `unseen` bin
        inputs.loc[inputs.index[15:25], "carrier"] = None
        late = current["is_departure_delayed"].to_numpy()
        noisy = 1 / (1 + np.exp(-(1.4 * late - 1.3 + rng.normal(0, 1, len(late)))))
        self.rows = pd.DataFrame(
            {
                "carrier": current["carrier"],
                "flight": 0,
                "origin": current["origin"],
                "dest": current["dest"],
                "tailnum": None,
                "scheduled_departure_at": current["scheduled_departure_at"],
                "probability": np.round(noisy, 2).clip(0.01, 0.99),  # ties, as a coarse model makes
                "label": late.astype(float),
            }
        )
        self.rows["features"] = [
            {k: (bool(v) if k == "has_plane_record" and v is not None else v) for k, v in row.items()}
            for row in inputs.to_dict("records")
        ]
        flights = query(
            built,
            "select flight_id, flight_number, tailnum from "
            f"{model_relations(built, 'staging')['stg_nycflights__flights']} where flight_month = '{MONTH}'",
        ).to_pandas()
        numbers = flights.set_index("flight_id")
        self.rows["flight"] = numbers.loc[current["flight_id"], "flight_number"].to_numpy()
        self.rows["tailnum"] = numbers.loc[current["flight_id"], "tailnum"].to_numpy()
        cancelled = _cancelled(built, MONTH, 40).rename(columns={"flight_number": "flight"})
        cancelled["probability"] = 0.5
        cancelled["label"] = np.nan
        cancelled["features"] = [self.rows["features"].iloc[i] for i in range(len(cancelled))]
        self.rows = pd.concat([self.rows, cancelled], ignore_index=True)
        ref_x = reference_rows[self.features]
        importance = {name: 1 / len(self.features) for name in self.features}
        validation_proba = np.round(rng.beta(2, 6, 3000), 3)
        self.profile = profile.reference_profile(ref_x, self.categorical, self.numeric, validation_proba, importance)

    def log(self, settings: Settings, at: datetime, probability_shift: float = 0.0, only: int | None = None) -> None:
        """Write every prediction (or the first ``only``) to the log, as the API would, answered at ``at``."""
        engine = sa.create_engine(settings.prediction_log_url)
        metadata.create_all(engine)
        rows = []
        for i, row in enumerate(self.rows.head(only).itertuples()):
            request = {"carrier": row.carrier, "flight": int(row.flight), "tailnum": row.tailnum}
            request |= {"origin": row.origin, "dest": row.dest}
            features = row.features
            missing = sorted(k for k, v in features.items() if v is None)
            p = min(0.99, float(row.probability) + probability_shift)
            departure = pd.Timestamp(row.scheduled_departure_at).to_pydatetime()
            stamp = at + timedelta(milliseconds=i)
            answer = (features, missing, p, p >= 0.5)
            rows.append(log_row(str(uuid.uuid4()), stamp, "flight_delay", VERSION, request, departure, *answer))
        with engine.begin() as conn:
            conn.execute(predictions.insert(), rows)
        engine.dispose()

    def write_reference(self, settings: Settings) -> None:
        rows = profile.reference_rows(json.loads(json.dumps(self.profile)))  # through JSON, as MLflow keeps it
        rows["reference_models"] = [("run-under-test", 0.75, 0.74, 0.76)]
        reference.write_version(settings, VERSION, rows)


def _build(settings: Settings, case: Case, month: str | None = None) -> None:
    """Land the log, publish, write the reference, build the monitoring models and what they read."""
    monitor.land_predictions(settings, month)
    publish(settings)
    case.write_reference(settings)
    # What the monitoring models read, and their tests; a test that also reads a model not built here is left out.
    run_dbt(settings, ["build", "--select", "+tag:monitoring", "--indirect-selection", "cautious"], month=month)


def _marts(settings: Settings) -> dict[str, pd.DataFrame]:
    relations = model_relations(settings, "monitoring")
    frames = {}
    for name in MARTS:
        frame = query(settings, f"select * from {relations[name]}").to_pandas()
        order = ("prediction_month", "model_version", "feature", "bin_index", "carrier", "flight_number", "origin")
        key = [c for c in (*order, "scheduled_departure_at") if c in frame]
        frames[name] = frame.sort_values(key).reset_index(drop=True)
    return frames


@pytest.fixture(scope="module")
def case(duckdb_built: Settings) -> Case:
    return Case(duckdb_built)


@pytest.fixture(scope="module")
def duckdb_monitored(
    duckdb_built: Settings, case: Case, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, dict[str, pd.DataFrame]]:
    settings = _isolated(duckdb_built, tmp_path_factory.mktemp("monitoring") / "home")
    first = datetime(2013, 10, 31, 12, tzinfo=UTC)
    case.log(settings, first)
    case.log(settings, first + timedelta(hours=1), probability_shift=0.3, only=200)  # asked again: not counted
    _build(settings, case)
    return settings, _marts(settings)


def _expected_numeric(values: pd.Series, ref: dict[str, Any]) -> dict[str, float]:
    x = values.dropna().to_numpy(dtype=float)
    edges = np.asarray(ref["edges"])
    counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
    current = np.append(counts, len(values) - len(x)) / len(values)
    expected = np.append(ref["shares"], ref["missing_share"])
    c, r = np.maximum(current, 1e-4), np.maximum(expected, 1e-4)
    quantiles = np.asarray(ref["quantiles"])
    w = wasserstein_distance(x, quantiles)
    return {
        "psi": float(np.sum((c - r) * np.log(c / r))),
        "wasserstein": w,
        "wasserstein_over_std": w / ref["std"],
        "ks_statistic": ks_2samp(x, quantiles).statistic,
        "missing_rate": (len(values) - len(x)) / len(values),
    }


def _expected_categorical(values: pd.Series, ref: dict[str, Any]) -> dict[str, float]:
    top, others = ref["categories"], set(ref["other_categories"])

    def bin_of(v: Any) -> str:
        if pd.isna(v):  # pandas hands a missing value over as NaN, not None
            return "__missing__"
        return v if v in top else "__other__" if v in others else "__unseen__"

    labels = [*top, "__other__", "__unseen__", "__missing__"]
    shares = values.map(bin_of).value_counts(normalize=True).reindex(labels, fill_value=0.0).to_numpy()
    expected = np.array([*ref["shares"], ref["other_share"], ref["unseen_share"], ref["missing_share"]])
    c, r = np.maximum(shares, 1e-4), np.maximum(expected, 1e-4)
    return {
        "psi": float(np.sum((c - r) * np.log(c / r))),
        "js_distance": float(jensenshannon(shares, expected, base=2)),
        "largest_share_change": float(np.max(np.abs(shares - expected))),
        "missing_rate": float(shares[-1]),
    }


def test_every_drift_figure_equals_scipy_on_the_same_arrays(
    case: Case, duckdb_monitored: tuple[Settings, dict[str, pd.DataFrame]]
) -> None:
    _, marts = duckdb_monitored
    drift = marts["mon_feature_drift"].set_index("feature")
    logged = pd.DataFrame(list(case.rows["features"]))  # the first prediction of every flight
    assert set(drift.index) == {*case.features, profile.PROBABILITY}
    checked = 0
    for name in case.numeric:
        want = _expected_numeric(logged[name].astype(float), case.profile["features"][name])
        for key, value in want.items():
            assert drift.loc[name, key] == pytest.approx(value, abs=TOLERANCE), (name, key)
            checked += 1
    for name in case.categorical:
        want = _expected_categorical(logged[name], case.profile["features"][name])
        for key, value in want.items():
            assert drift.loc[name, key] == pytest.approx(value, abs=TOLERANCE), (name, key)
            checked += 1
    prediction = _expected_numeric(case.rows["probability"].astype(float), case.profile[profile.PROBABILITY])
    for key, value in prediction.items():
        assert drift.loc[profile.PROBABILITY, key] == pytest.approx(value, abs=TOLERANCE), key
    # The blanked, renamed and unseen inputs really moved their figures.
    assert drift.loc["wind_gust_mph", "missing_rate"] > 0.15
    assert drift.loc["dest", "largest_share_change"] > 0
    assert checked > 150


def test_live_and_estimated_performance_equal_scikit_learn(
    case: Case, duckdb_monitored: tuple[Settings, dict[str, pd.DataFrame]]
) -> None:
    _, marts = duckdb_monitored
    row = marts["mon_performance"].iloc[0]
    labelled = case.rows.dropna(subset=["label"])
    y, p = labelled["label"].to_numpy(), labelled["probability"].to_numpy()
    assert row["predictions"] == len(case.rows)  # flights asked about twice count once
    assert row["labelled"] == len(labelled) and row["cancelled"] == len(case.rows) - len(labelled)
    assert row["label_coverage"] == pytest.approx(len(labelled) / len(case.rows), abs=TOLERANCE)
    assert row["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=TOLERANCE)
    assert row["average_precision"] == pytest.approx(average_precision_score(y, p), abs=TOLERANCE)
    assert row["brier"] == pytest.approx(brier_score_loss(y, p), abs=TOLERANCE)
    assert row["log_loss"] == pytest.approx(log_loss(y, p), abs=TOLERANCE)
    assert row["calibration_gap"] == pytest.approx(p.mean() - y.mean(), abs=TOLERANCE)
    # CBPE: every flight counts as late with weight p and on time with weight 1 - p.
    q = case.rows["probability"].to_numpy()
    both = np.concatenate([np.ones_like(q), np.zeros_like(q)])
    weights = np.concatenate([q, 1 - q])
    expected_auc = roc_auc_score(both, np.concatenate([q, q]), sample_weight=weights)
    assert row["estimated_roc_auc"] == pytest.approx(expected_auc, abs=TOLERANCE)
    assert row["estimated_brier"] == pytest.approx(np.mean(q * (1 - q)), abs=TOLERANCE)
    assert row["roc_auc_estimate_error"] == pytest.approx(expected_auc - roc_auc_score(y, p), abs=TOLERANCE)


def test_landing_a_replayed_month_twice_leaves_the_same_monitoring_rows(
    case: Case, duckdb_monitored: tuple[Settings, dict[str, pd.DataFrame]]
) -> None:
    settings, before = duckdb_monitored
    # The month replayed again: every flight answered again (new ids, later), landed twice, rebuilt for the month.
    case.log(settings, datetime(2013, 11, 30, 12, tzinfo=UTC), probability_shift=0.2)
    _build(settings, case, MONTH)
    _build(settings, case, MONTH)
    after = _marts(settings)
    for name in MARTS:
        # Keys, counts, labels and bands exactly; a float may differ in its last bits, as DuckDB
        # sums in parallel in whatever order its threads finish (relative 1e-12 and no more).
        pd.testing.assert_frame_equal(after[name], before[name], check_exact=False, rtol=1e-12, atol=1e-15, obj=name)


@pytest.mark.integration
def test_the_same_models_on_postgres_equal_duckdb(
    postgres_built: Settings,
    case: Case,
    duckdb_monitored: tuple[Settings, dict[str, pd.DataFrame]],
    tmp_path_factory: pytest.TempPathFactory,
    pg_database: str,
) -> None:
    home = tmp_path_factory.mktemp("monitoring-pg") / "home"
    settings = _isolated(postgres_built, home, pg_database=pg_database.rsplit("/", 1)[1])
    first = datetime(2013, 10, 31, 12, tzinfo=UTC)
    case.log(settings, first)
    case.log(settings, first + timedelta(hours=1), probability_shift=0.3, only=200)
    _build(settings, case)
    pg = _marts(settings)
    _, duck = duckdb_monitored
    for name in MARTS:
        left, right = pg[name], duck[name]
        assert list(left.columns) == list(right.columns), name
        assert len(left) == len(right) > 0, name
        for column in left.columns:
            a, b = left[column], right[column]
            if pd.api.types.is_float_dtype(a) or pd.api.types.is_float_dtype(b):
                np.testing.assert_allclose(a.astype(float), b.astype(float), atol=TOLERANCE, err_msg=f"{name}.{column}")
            elif column not in ("prediction_id",):
                assert a.astype(str).tolist() == b.astype(str).tolist(), f"{name}.{column}"
