"""The API's features equal the training mart's, flight by flight, as of the same instant.

A seeded random sample of the mart's flights is asked of the running app as
``test_serving`` asks it (the request a client would send); the features the app
assembles (through the ``OnlineFeatures`` its lifespan loaded, the object
``/predict`` uses) and the features ``/predict`` logged must equal the mart's
row: exact for strings and integers, to 1e-9 for floats, null together. The same
comparison finds mismatches when the API computes them as of another horizon or
counts an outcome known exactly at the prediction instant.
"""

from __future__ import annotations

import json
import math
import random
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from core.settings import Settings
from ml.data import is_feature
from serving import features as features_module
from serving.app import create_app
from serving.features import HISTORY_WINDOW_DAYS, SERVED_FEATURES, OnlineFeatures
from serving.schemas import FlightRequest
from serving.services import Services
from tests.helpers.predict import predict_body
from warehouse.dbt import mart_relations
from warehouse.query import query

pytestmark = pytest.mark.slow

SAMPLE = 250
SEED = 14


@pytest.fixture(scope="module")
def mart_rows(served: tuple[Settings, Any]) -> list[dict[str, Any]]:
    """SAMPLE flights of the training mart drawn at random (seeded), with what a request needs from staging."""
    settings, _ = served
    mart = mart_relations(settings)["training_flights"]
    ids = query(settings, f"select flight_id from {mart} order by flight_id").column("flight_id").to_pylist()
    chosen = random.Random(SEED).sample(ids, SAMPLE)
    listed = ", ".join(f"'{flight_id}'" for flight_id in chosen)  # md5 hex keys: safe to inline
    rows = query(
        settings,
        f"""
        select t.*, s.tailnum, s.flight_number
        from {mart} as t
        inner join stg_nycflights__flights as s using (flight_id)
        where t.flight_id in ({listed})
        order by t.flight_id
        """,
    ).to_pylist()
    assert len(rows) == SAMPLE
    return rows


def _equal(api: Any, mart: Any) -> bool:
    if api is None or mart is None:
        return api is None and mart is None
    if isinstance(api, float) or isinstance(mart, float):
        return isinstance(api, int | float) and isinstance(mart, int | float) and math.isclose(api, mart, abs_tol=1e-9)
    return type(api) is type(mart) and bool(api == mart)


def _mismatches(assembled: dict[str, dict[str, Any]], rows: list[dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    """(flight, feature, API value, mart value) of every served feature that differs from the mart."""
    return [
        (row["flight_id"], name, assembled[row["flight_id"]].get(name, "<not built>"), row[name])
        for row in rows
        for name in sorted(SERVED_FEATURES)
        if not _equal(assembled[row["flight_id"]].get(name, "<not built>"), row[name])
    ]


def _assemble(features: OnlineFeatures, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["flight_id"]: features.assemble(FlightRequest.model_validate(predict_body(row)))[0] for row in rows}


def test_the_mart_has_no_feature_the_api_cannot_build(mart_rows: list[dict[str, Any]]) -> None:
    """Any feature a model may train on (ml.data's rule) the API builds; every one it builds is in the mart."""
    columns = set(mart_rows[0])
    # One value per mart: the horizon is a run parameter, not a feature.
    trainable = {c for c in columns if is_feature(c)} - {"prediction_horizon_minutes", "tailnum", "flight_number"}
    assert trainable - SERVED_FEATURES == set()
    assert SERVED_FEATURES - columns == set()


def test_the_window_is_dbt_s(served: tuple[Settings, Any]) -> None:
    import yaml

    settings, _ = served
    project = yaml.safe_load((settings.dbt_project_dir / "dbt_project.yml").read_text())
    assert project["vars"]["history_window_days"] == HISTORY_WINDOW_DAYS


def test_api_features_equal_the_mart_s(served: tuple[Settings, Any], mart_rows: list[dict[str, Any]]) -> None:
    settings, _ = served
    with TestClient(create_app(settings)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        assert services.snapshot is not None
        features = services.snapshot.features  # the object /predict reads
        assert features.horizon_minutes == settings.prediction_horizon_minutes
        assert _mismatches(_assemble(features, mart_rows), mart_rows) == []

        answers = {}
        for row in mart_rows:
            response = client.post("/predict", json=predict_body(row))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["horizon_minutes"] == row["prediction_horizon_minutes"]
            assert datetime.fromisoformat(body["features_as_of"]) == row["predicted_at"]
            answers[body["prediction_id"]] = row["flight_id"]
    # What /predict scored is in the log (the lifespan's shutdown drained it).
    with sa.create_engine(settings.prediction_log_url).connect() as conn:
        logged = conn.execute(sa.text("select prediction_id, features from predictions")).all()
    by_flight = {answers[pid]: json.loads(features) for pid, features in logged if pid in answers}
    assert len(by_flight) == SAMPLE
    assert _mismatches(by_flight, mart_rows) == []


def test_the_comparison_finds_features_of_another_instant(
    served: tuple[Settings, Any], mart_rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As of another horizon, or counting what is known exactly at P, the API's features are not the mart's."""
    settings, _ = served
    other = OnlineFeatures.load(settings.model_copy(update={"prediction_horizon_minutes": 60}))
    found = _mismatches(_assemble(other, mart_rows), mart_rows)
    assert len({flight for flight, *_ in found}) > SAMPLE // 2
    assert {"origin_departures_2h", "route_flights_window"} <= {name for _, name, *_ in found}

    features = OnlineFeatures.load(settings)
    assert _mismatches(_assemble(features, mart_rows), mart_rows) == []
    monkeypatch.setattr(features_module, "KNOWN_BEFORE", "right")  # [start, P) becomes (start, P]
    found = _mismatches(_assemble(features, mart_rows), mart_rows)
    assert found, "a window that includes P went unnoticed"
    assert {name for _, name, *_ in found} <= {
        *features_module.HISTORY_COLUMNS,
        *features_module.SAME_DAY_COLUMNS,
        "weather_age_hours",
        *features_module.WEATHER_COLUMNS,
    }
