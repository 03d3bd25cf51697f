"""The prediction API with the real trained model and the real online marts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lab.settings import Settings
from ml.data import prepare
from ml.registry import promote
from serving.app import create_app
from transform.dbt import mart_relations
from transform.warehouse import query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(trained, tmp_path_factory):  # type: ignore[no-untyped-def]
    settings, result = trained
    promote(settings, result.model_version)
    log_url = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'predictions.db'}"
    return settings.model_copy(update={"prediction_log_url": log_url, "serve_poll_seconds": 0.0}), result


def _sample_flights(settings: Settings, n: int) -> list[dict]:  # type: ignore[type-arg]
    marts = mart_relations(settings)
    rows = query(
        settings,
        f"""
        select t.*, s.tailnum, s.flight_number
        from {marts["training_flights"]} as t
        inner join stg_nycflights__flights as s using (flight_id)
        order by hash(flight_id)
        limit {n}
        """,
    )
    return rows.to_pylist()


def _request(row: dict) -> dict:  # type: ignore[type-arg]
    minutes = row["departure_minute_of_day"]
    return {
        "carrier": row["carrier"],
        "flight": row["flight_number"],
        "tailnum": row["tailnum"],
        "origin": row["origin"],
        "dest": row["dest"],
        "scheduled_departure": f"{row['flight_date']}T{minutes // 60:02d}:{minutes % 60:02d}:00",
    }


def test_api_probability_equals_the_model_on_the_mart_features(served) -> None:  # type: ignore[no-untyped-def]
    import mlflow
    import pandas as pd

    settings, result = served
    flights = _sample_flights(settings, 200)
    model = mlflow.sklearn.load_model(f"models:/{settings.model_name}/{result.model_version}")
    frame = prepare(pd.DataFrame(flights))
    from ml.data import feature_columns

    categorical, numeric = feature_columns(frame)
    expected = model.predict_proba(frame[categorical + numeric])[:, 1]
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json=_request(row)) for row in flights]
        assert client.get("/ready").json()["status"] == "ready"
    assert all(a.status_code == 200 for a in answers)
    for answer, want in zip(answers, expected, strict=True):
        body = answer.json()
        assert body["probability"] == pytest.approx(float(want), abs=1e-12)
        assert body["model"] == {"name": settings.model_name, "version": result.model_version}
    engine = sa.create_engine(settings.prediction_log_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("select count(*) from predictions")).scalar_one()
    assert logged == len(answers)  # lifespan shutdown flushed every answered prediction


def test_batch_unknown_tailnum_and_bad_input(served) -> None:  # type: ignore[no-untyped-def]
    settings, _ = served
    flight = _request(_sample_flights(settings, 1)[0])
    with TestClient(create_app(settings)) as client:
        batch = client.post("/predict/batch", json={"flights": [flight, {**flight, "tailnum": "N0NE"}]})
        assert batch.status_code == 200
        second = batch.json()["predictions"][1]
        assert "plane_seat_count" in second["missing_features"]
        for bad, field in [
            ({**flight, "carrier": "ZZ"}, "carrier"),
            ({**flight, "origin": "XXX"}, "origin"),
            ({**flight, "flight": "abc"}, "flight"),
            ({**flight, "scheduled_departure": "2013-02-30T10:00:00"}, "scheduled_departure"),
        ]:
            response = client.post("/predict", json=bad)
            assert response.status_code == 422, bad
            assert field in str(response.json()["detail"][0]["loc"])
        assert (
            client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}).status_code
            == 422
        )
        info = client.get("/model").json()
        assert info["alias"] == "champion" and info["lineage"]["lab.snapshot.flights"].isdigit()
