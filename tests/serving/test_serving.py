"""The prediction API with the real trained model and the real online marts."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from core.settings import Settings
from ml.artifacts import load_model
from ml.data import prepare
from serving.app import create_app
from serving.model_store import ServedModel
from tests.helpers.predict import predict_body
from warehouse.dbt import mart_relations
from warehouse.query import query

pytestmark = pytest.mark.slow


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


def test_api_probability_equals_the_model_on_the_mart_features(served) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd

    settings, result = served
    flights = _sample_flights(settings, 200)
    model = load_model(f"models:/{settings.model_name}/{result.model_version}").pipeline
    frame = prepare(pd.DataFrame(flights))
    from ml.data import feature_columns

    categorical, numeric = feature_columns(frame)
    expected = model.predict_proba(frame[categorical + numeric])[:, 1]
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json=predict_body(row)) for row in flights]
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


def test_compiled_trees_equal_sklearn_on_the_mart(served) -> None:  # type: ignore[no-untyped-def]
    """The served fast path is the same model: equal to predict_proba on real rows and odd ones."""
    import mlflow
    import numpy as np

    from ml.data import LABEL, read_mart
    from ml.factories import baseline
    from serving.compiled import compile_pipeline

    settings, result = served
    model = load_model(f"models:/{settings.model_name}/{result.model_version}").pipeline
    frame = read_mart(settings).iloc[::15]  # ~22k rows across every month, with unknown planes
    # The model's own features, as its run recorded them (the tuning may leave some of the mart's out).
    params = mlflow.MlflowClient().get_run(result.run_id).data.params
    categorical, numeric = params["categorical_features"].split(","), params["numeric_features"].split(",")
    features = frame[categorical + numeric]
    rows = [{k: (None if v != v else v) for k, v in r.items()} for r in features.to_dict("records")]
    odd = {name: None for name in categorical + numeric} | {"carrier": "ZZ", "origin": "EWR", "dest": "NOPE"}
    rows.append(odd)
    features = features.astype({c: "object" for c in categorical})
    features.loc[len(features) + 10**7] = [odd[c] for c in categorical + numeric]
    # Typed as at training (ml.data.prepare): pandas turns the appended None into NaN, which the
    # encoder reads as missing, not as the None category it learned and encode() uses.
    features[categorical] = features[categorical].where(features[categorical].notna(), None)
    compiled = compile_pipeline(model, categorical, numeric)
    assert compiled is not None
    assert frame["plane_manufacturer"].isna().any()  # the None category is exercised
    expected = model.predict_proba(features.astype({c: "float64" for c in numeric}))[:, 1]
    got = compiled.predict_proba(compiled.encode(rows, categorical, numeric))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # Any other pipeline shape is left to sklearn.
    other = baseline(categorical, numeric).fit(frame[categorical + numeric].iloc[:2000], frame[LABEL].iloc[:2000])
    assert compile_pipeline(other, categorical, numeric) is None


def test_a_batch_scores_planeless_flights_as_one_flight_at_a_time(served) -> None:  # type: ignore[no-untyped-def]
    """Over 32 rows a batch goes to sklearn, not the compiled trees: the None category must survive it."""
    import numpy as np
    import pandas as pd

    from serving.model_store import ModelStore

    settings, result = served
    model = ModelStore(settings).load(result.model_version)
    marts = mart_relations(settings)
    frame = prepare(query(settings, f"select * from {marts['training_flights']} limit 4000").to_pandas())
    planeless = frame[frame["plane_manufacturer"].isna()].head(20)
    assert len(planeless) == 20
    rows = [
        {k: (None if v != v else v) for k, v in r.items()}
        for r in pd.concat([planeless, frame.head(30)])[model.features].to_dict("records")
    ]
    assert len(rows) > ServedModel.COMPILED_MAX_ROWS
    one_by_one = np.array([model.predict_proba([row])[0] for row in rows])  # the compiled trees
    np.testing.assert_allclose(model.predict_proba(rows), one_by_one, rtol=0, atol=1e-12)


def test_a_champion_trained_at_another_horizon_is_refused(served) -> None:  # type: ignore[no-untyped-def]
    from ml.artifacts import ModelRefused
    from serving.model_store import ModelStore

    settings, result = served
    with pytest.raises(ModelRefused, match="as of 120 min before departure; this API computes them 90 min"):
        ModelStore(settings.model_copy(update={"prediction_horizon_minutes": 90})).load(result.model_version)


def test_a_replay_sends_a_real_day_in_schedule_order_and_the_log_holds_every_flight(served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import date

    from lab.traffic.examples import scheduled_flight_requests
    from lab.traffic.replay import replay
    from serving.process import api_server

    settings, _ = served
    settings = settings.model_copy(update={"prediction_log_url": f"sqlite:///{tmp_path / 'replay.db'}"})
    flights = scheduled_flight_requests(settings, date(2013, 7, 1), date(2013, 7, 1))
    (day,) = query(
        settings,
        "select count(*) as n, count(*) filter (where is_cancelled) as cancelled"
        " from stg_nycflights__flights where flight_date = date '2013-07-01'",
    ).to_pylist()
    assert len(flights) == day["n"] and day["cancelled"] > 0  # the whole day's schedule, cancellations too
    times = [f["scheduled_departure"] for f in flights]
    assert times == sorted(times)
    one_by_one, batched = flights[:40], flights[40:]
    with api_server(settings) as (url, _):
        paced = replay(url, one_by_one, rate=20.0)
        fast = replay(url, batched, batch=100)
    assert (paced.answered, fast.answered) == (len(one_by_one), len(batched))
    assert not paced.refused and not fast.refused
    assert paced.seconds >= (len(one_by_one) - 1) / 20.0  # --rate is a ceiling it kept
    engine = sa.create_engine(settings.prediction_log_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("select carrier, flight, origin from predictions order by predicted_at")).all()
    key = [(f["carrier"], f["flight"], f["origin"]) for f in flights]
    assert sorted(map(tuple, logged)) == sorted(key)  # every flight, once
    assert [tuple(row) for row in logged[:40]] == key[:40]  # the paced ones answered in schedule order


def test_batch_unknown_tailnum_and_bad_input(served) -> None:  # type: ignore[no-untyped-def]
    settings, _ = served
    flight = predict_body(_sample_flights(settings, 1)[0])
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
        # In a batch, even of one, the error says which flight of the list.
        one = client.post("/predict/batch", json={"flights": [{**flight, "carrier": "ZZ"}]})
        assert one.status_code == 422 and one.json()["detail"][0]["loc"] == ["body", "flights", 0, "carrier"]
        info = client.get("/model").json()
        assert info["alias"] == "champion" and info["lineage"]["lab.snapshot.flights"].isdigit()


def test_no_generated_input_gives_a_server_error(served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """schemathesis against the live server's OpenAPI spec: at least 1000 cases for every operation that
    takes input (the batch route included), and no answer of 500 or more."""
    import json
    import re
    import subprocess
    import sys
    from collections import Counter
    from pathlib import Path
    from urllib.parse import urlparse

    from serving.process import api_server

    settings, _ = served
    schemathesis = Path(sys.executable).with_name("schemathesis")
    har = tmp_path / "schemathesis.har"
    with api_server(settings) as (url, _):
        run = subprocess.run(
            [
                str(schemathesis),
                "run",
                f"{url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "1000",
                "--seed",
                "13",
                "--report",
                "har",
                "--report-har-path",
                str(har),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert run.returncode == 0, run.stdout[-3000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", run.stdout).groups())  # type: ignore[union-attr]
    assert passed == generated
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) == generated
    per_operation = Counter((e["request"]["method"], urlparse(e["request"]["url"]).path) for e in entries)
    for operation in [("POST", "/predict"), ("POST", "/predict/batch"), ("POST", "/admin/reload")]:
        assert per_operation[operation] >= 1000, per_operation
    assert not [e["response"]["status"] for e in entries if e["response"]["status"] >= 500]


def test_a_huge_body_is_refused_at_once_while_health_answers(served) -> None:  # type: ignore[no-untyped-def]
    """The real server: 45 MB bodies get a 413 before they are read, and /health stays fast meanwhile.

    (Such a body stalled /health for seconds, then came back as a 422 as big as
    itself.) Over the same wire: NaN is a 422 and a non-ASCII admin token a 401;
    the largest valid batch, 1,000 flights, is under the limit.
    """
    import json
    import socket
    import threading
    import time
    from urllib.parse import urlparse

    import httpx

    from serving.process import api_server

    settings, _ = served
    big = 45 * 2**20
    health: list[float] = []
    done = threading.Event()

    def poll_health(url: str) -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                started = time.perf_counter()
                assert http.get(f"{url}/health").status_code == 200
                health.append(time.perf_counter() - started)
                time.sleep(0.01)

    def connect(url: str) -> socket.socket:
        parts = urlparse(url)
        return socket.create_connection((parts.hostname, parts.port), timeout=10)

    flights = [predict_body(row) for row in _sample_flights(settings, 1000)]
    with api_server(settings) as (url, _):
        poller = threading.Thread(target=poll_health, args=(url,))
        poller.start()
        while len(health) < 3:  # /health is being asked before the big bodies start
            time.sleep(0.01)
        try:
            # Headers and the first 64 KiB sent: the 413 comes back before the other 45 MB are.
            with connect(url) as sock:
                started = time.perf_counter()
                sock.sendall(
                    b"POST /predict/batch HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % big
                )
                sock.sendall(b" " * 65536)
                assert _read_response(sock)[0] == 413
                assert time.perf_counter() - started < 1.0
                sock.sendall(b" " * (big - 65536))  # read and dropped by the server
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: api\r\n\r\n")
                assert _read_response(sock)[0] == 200  # the same connection goes on serving

            # An ordinary client sends it all before it reads: with a length, and chunked.
            for content in [b" " * big, (b" " * 65536 for _ in range(big // 65536))]:
                started = time.perf_counter()
                response = httpx.post(
                    f"{url}/predict/batch", content=content, headers={"content-type": "application/json"}, timeout=30
                )
                assert response.status_code == 413, response.text[:200]
                assert time.perf_counter() - started < 2.0
                assert str(settings.serve_max_body_bytes) in response.json()["detail"]
        finally:
            deadline = time.monotonic() + 10
            while len(health) < 10 and time.monotonic() < deadline:  # a few answers after them, too
                time.sleep(0.01)
            done.set()
            poller.join()
        assert len(health) >= 10 and max(health) < 0.5, (len(health), max(health))

        batch = httpx.post(f"{url}/predict/batch", json={"flights": flights}, timeout=60)
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == 1000
        nan = json.dumps({**flights[0], "flight": "@"}).replace('"@"', "NaN")
        response = httpx.post(f"{url}/predict", content=nan, headers={"content-type": "application/json"})
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "flight"]
        with connect(url) as sock:
            sock.sendall(b"POST /admin/reload HTTP/1.1\r\nHost: api\r\nX-Admin-Token: \xc3\xa9\xff\r\n\r\n")
            status, body = _read_response(sock)
            assert status == 401 and json.loads(body)["detail"] == "a valid X-Admin-Token header is required"


def _read_response(sock) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """One HTTP/1.1 response with a Content-Length, read off ``sock``: (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(lines[0].split()[1]), body


def test_sigterm_during_a_burst_logs_every_answer(served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from serving.process import api_server

    settings = served[0].model_copy(update={"prediction_log_url": f"sqlite:///{tmp_path / 'log.db'}"})
    flights = [predict_body(row) for row in _sample_flights(settings, 40)]
    answered = threading.Event()

    def client(worker: int) -> int:
        ok = 0
        with httpx.Client(timeout=30) as http:
            for i in range(500):
                try:
                    response = http.post(f"{url}/predict", json=flights[(worker + i) % len(flights)])
                except httpx.HTTPError:
                    break  # the server has stopped accepting
                if response.status_code == 200:
                    ok += 1
                    answered.set()
        return ok

    with api_server(settings) as (url, process):
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(client, w) for w in range(16)]
            assert answered.wait(60)
            time.sleep(1.0)  # mid-burst
            process.send_signal(signal.SIGTERM)
            ok = sum(f.result() for f in futures)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit says why.
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert 0 < ok < 16 * 500  # the burst was cut short
    engine = sa.create_engine(settings.prediction_log_url)
    with engine.connect() as conn:
        logged = conn.execute(sa.text("select count(*) from predictions")).scalar_one()
    assert logged == ok


def test_new_champion_is_served_without_restart(served) -> None:  # type: ignore[no-untyped-def]
    import mlflow
    from pydantic import SecretStr

    from core.names import CHAMPION
    from ml.train import train

    settings, good = served
    settings = settings.model_copy(update={"admin_token": SecretStr("s3cret-token")})
    flight = predict_body(_sample_flights(settings, 1)[0])
    other = train(settings, "baseline")  # registered; becomes champion by hand below
    client_ml = mlflow.MlflowClient()
    try:
        with TestClient(create_app(settings)) as client:
            assert client.post("/predict", json=flight).json()["model"]["version"] == good.model_version
            assert client.post("/admin/reload").status_code == 401
            assert client.post("/admin/reload", headers={"X-Admin-Token": "wrong"}).status_code == 401
            client_ml.set_registered_model_alias(settings.model_name, CHAMPION, other.model_version)
            reloaded = client.post("/admin/reload", headers={"X-Admin-Token": "s3cret-token"})
            assert reloaded.status_code == 200
            assert reloaded.json()["previous_version"] == good.model_version
            assert reloaded.json()["version"] == other.model_version
            answer = client.post("/predict", json=flight).json()
            assert answer["model"]["version"] == other.model_version
            assert client.get("/model").json()["version"] == other.model_version
    finally:
        client_ml.set_registered_model_alias(settings.model_name, CHAMPION, good.model_version)


def test_a_champion_that_would_run_code_is_refused_and_the_last_one_serves(served, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The alias moves to a pickled model whose load runs a command: nothing runs, v-before keeps serving."""
    import mlflow
    from pydantic import SecretStr

    from core.names import CHAMPION
    from tests.helpers.hostile import register_code_running_model

    settings, good = served
    settings = settings.model_copy(update={"admin_token": SecretStr("s3cret-token")})
    flight = predict_body(_sample_flights(settings, 1)[0])
    marker = tmp_path / "pwned"
    client_ml = mlflow.MlflowClient()
    evil = register_code_running_model(settings, marker)
    try:
        with TestClient(create_app(settings)) as client:
            client_ml.set_registered_model_alias(settings.model_name, CHAMPION, evil)
            reloaded = client.post("/admin/reload", headers={"X-Admin-Token": "s3cret-token"})
            assert reloaded.status_code == 200 and reloaded.json()["version"] == good.model_version
            answer = client.post("/predict", json=flight)
            assert answer.status_code == 200 and answer.json()["model"]["version"] == good.model_version
            info_body = client.get("/model").json()
            assert info_body["version"] == good.model_version
            assert info_body["refused"]["version"] == evil
            assert "serialised as 'pickle'" in info_body["refused"]["reason"]
        assert not marker.exists()

        # Started with the refused champion and no earlier one: up, not ready, never serving it.
        with TestClient(create_app(settings)) as client:
            ready = client.get("/ready")
            assert ready.status_code == 503 and ready.json()["refused"]["version"] == evil
            assert client.post("/predict", json=flight).status_code == 503
            assert client.get("/model").status_code == 503
        assert not marker.exists()
    finally:
        client_ml.set_registered_model_alias(settings.model_name, CHAMPION, good.model_version)
