"""The API follows the flight event stream (issue 26): every worker applies every event, from where its batch ends.

Each test serves the session's model with features whose outcomes stop at SPLIT (the
published tables of the session's build, written again without what became known
later) and streams the outcomes known in the WINDOW after it, as events, on a real
Redis under a stream key of its own. A request scheduled in the window, sent with
``Lab-Stream-Wait`` naming the last entry, must be answered exactly as the batch of the
whole year answers it: the same features, so the same probability. The same requests
to an API that does not follow the stream get other answers, so the comparison can fail.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import redis
from fastapi.testclient import TestClient

from core.processes import free_port
from core.settings import Settings
from ingestion.event_stream import connect
from ingestion.events import FlightEvent, to_fields
from serving.app import create_app
from serving.features import OnlineFeatures
from serving.schemas import FlightRequest
from tests.helpers.features import event_of_row, publish_tables
from tests.helpers.redis_server import RedisServer
from warehouse.online import read_current

pytestmark = pytest.mark.integration

SPLIT = datetime(2013, 6, 15, 12, tzinfo=UTC)
WINDOW = timedelta(hours=10)
REQUESTS = 120
SEED = 26
_TAILNUM = re.compile(r"^[A-Z0-9]{2,8}$")  # what the API takes as a tail number


@pytest.fixture(scope="module")
def window(served: tuple[Settings, Any]) -> dict[str, Any]:
    """The stale tables, the window's events in time order, requests in the window and their expected features."""
    settings, _ = served
    tables = dict(read_current(settings).tables)
    outcomes = tables["online_flight_outcomes"]
    known = outcomes["outcome_known_at"]
    split = pa.scalar(SPLIT, pa.timestamp("us", tz="UTC"))
    from_split = pc.fill_null(pc.greater_equal(known, split), False)
    in_window = pc.and_(from_split, pc.fill_null(pc.less(known, pa.scalar(SPLIT + WINDOW, split.type)), False))
    later = outcomes.filter(in_window).sort_by([("outcome_known_at", "ascending"), ("event_id", "ascending")])
    events = [event_of_row(row) for row in later.to_pylist()]
    stale = {**tables, "online_flight_outcomes": outcomes.filter(pc.invert(from_split))}
    everything = OnlineFeatures.from_tables(
        "all", tables, settings.prediction_horizon_minutes, settings.late_departure_minutes
    )
    horizon = timedelta(minutes=settings.prediction_horizon_minutes)
    candidates = [
        row
        for row in outcomes.to_pylist()
        if row["scheduled_departure_at"] is not None
        and SPLIT + timedelta(minutes=30) < row["scheduled_departure_at"] - horizon < SPLIT + WINDOW
        and (row["tailnum"] is None or _TAILNUM.match(row["tailnum"]))
        and everything.airports.get(row["origin"])
    ]
    bodies = [_body(row, everything) for row in random.Random(SEED).sample(candidates, REQUESTS)]
    return {
        "stale": stale,
        "events": events,
        "bodies": bodies,
        "expected": [everything.assemble(FlightRequest(**body))[0] for body in bodies],
    }


def _body(row: dict[str, Any], features: OnlineFeatures) -> dict[str, Any]:
    _, _, number, _, _ = row["event_id"].split("/")
    local = row["scheduled_departure_at"].astimezone(ZoneInfo(features.airports[row["origin"]] or "UTC"))
    return {
        "carrier": row["carrier"],
        "flight": int(number),
        "tailnum": row["tailnum"],
        "origin": row["origin"],
        "dest": row["dest"],
        "scheduled_departure": local.replace(tzinfo=None).isoformat(),
    }


@pytest.fixture
def follow(served: tuple[Settings, Any], redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings of an API that follows a stream key of its own, with features of its own (none published yet)."""
    settings, _ = served
    key = f"test:follow:{uuid.uuid4().hex[:8]}"
    yield settings.model_copy(
        update={
            "serve_follow_stream": True,
            "stream_redis_url": redis_url,
            "stream_key": key,
            "features_uri": (tmp_path / "features").as_uri(),
            "prediction_log_url": f"sqlite:///{tmp_path / 'predictions.db'}",
        }
    )
    client = connect(redis_url)
    client.delete(key)
    client.close()


def _add(client: redis.Redis, key: str, events: list[FlightEvent]) -> list[str]:
    """XADD each event; the entry ids, in order."""
    pipe = client.pipeline(transaction=False)
    for event in events:
        pipe.xadd(key, to_fields(event))  # type: ignore[arg-type]
    return [entry.decode() for entry in pipe.execute()]


def _answers(client: TestClient, bodies: list[dict[str, Any]], wait: str | None) -> list[dict[str, Any]]:
    headers = {"Lab-Stream-Wait": wait} if wait else {}
    responses = [client.post("/predict", json=body, headers=headers) for body in bodies]
    assert [r.status_code for r in responses] == [200] * len(bodies), responses[0].text
    return [r.json() for r in responses]


def _expected(client: TestClient, window: dict[str, Any]) -> list[float]:
    served = client.app.state.services.snapshot.model  # type: ignore[attr-defined]
    return [float(p) for p in served.predict_proba(window["expected"])]


def _mismatches(answers: list[dict[str, Any]], expected: list[float]) -> list[int]:
    return [i for i, (a, p) in enumerate(zip(answers, expected, strict=True)) if abs(a["probability"] - p) > 1e-12]


def test_every_answer_after_the_stream_equals_the_batch_of_everything(follow: Settings, window: dict[str, Any]) -> None:
    events: list[FlightEvent] = window["events"]
    publish_tables(follow, window["stale"], stream_after="0-0")
    redis_client = connect(follow.stream_redis_url)
    with TestClient(create_app(follow)) as client:
        ids = _add(redis_client, follow.stream_key, events)
        answers = _answers(client, window["bodies"], ids[-1])
        expected = _expected(client, window)
        ready = client.get("/ready").json()
    assert _mismatches(answers, expected) == []
    assert {a["stream_position"] for a in answers} == {ids[-1]}
    through = max(event.at for event in events)
    assert {datetime.fromisoformat(a["events_through"]) for a in answers} == {through}
    assert ready["status"] == "ready"
    stream = ready["stream"]
    assert stream["following"] and stream["connected"] and stream["position"] == ids[-1]
    assert (stream["applied"], stream["duplicates"], stream["malformed"], stream["errors"]) == (len(events), 0, 0, 0)
    assert len(events) > 400

    # The broken variant: the same features and requests, the stream ignored.
    ignoring = follow.model_copy(update={"serve_follow_stream": False})
    with TestClient(create_app(ignoring)) as client:
        stale_answers = _answers(client, window["bodies"], ids[-1])
        assert client.get("/ready").json()["stream"]["following"] is False
    wrong = _mismatches(stale_answers, expected)
    assert len(wrong) > REQUESTS // 3
    assert {a["stream_position"] for a in stale_answers} == {None}
    assert all(datetime.fromisoformat(a["events_through"]) < SPLIT for a in stale_answers)


def test_a_worker_starts_after_the_batch_position_and_a_reload_catches_up(
    follow: Settings, window: dict[str, Any]
) -> None:
    """The manifest's stream position is where reading starts; new features are brought up to the reader's."""
    events: list[FlightEvent] = window["events"]
    redis_client = connect(follow.stream_redis_url)
    ids = _add(redis_client, follow.stream_key, events)
    covered = len(events) // 3
    publish_tables(follow, window["stale"], stream_after=ids[covered - 1])  # as if the batch held the first third
    with TestClient(create_app(follow)) as client:
        _answers(client, window["bodies"][:1], ids[-1])
        ready = client.get("/ready").json()["stream"]
        assert (ready["position"], ready["applied"]) == (ids[-1], len(events) - covered)
        # A build publishes again, covering nothing of the stream; the reload applies all of it to the new
        # features before they serve, while the reader stays where it was.
        version = publish_tables(follow, window["stale"], stream_after="0-0")
        services = client.app.state.services  # type: ignore[attr-defined]
        assert services.reload().features_version == version
        answers = _answers(client, window["bodies"], ids[-1])
        expected = _expected(client, window)
    assert _mismatches(answers, expected) == []


def test_without_redis_answers_go_on_marked_with_the_batch_watermark(follow: Settings, window: dict[str, Any]) -> None:
    away = follow.model_copy(update={"stream_redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    publish_tables(away, window["stale"], stream_after="0-0")
    with TestClient(create_app(away)) as client:
        ready = _ready_when(client, lambda r: r["stream"]["errors"] > 0)
        answers = _answers(client, window["bodies"][:5], "1-0")  # waits its bound, then answers
    assert ready["status"] == "degraded"
    assert not ready["stream"]["connected"] and "ConnectionError" in (ready["stream"]["last_error"] or "")
    assert {a["stream_position"] for a in answers} == {"0-0"}
    assert all(datetime.fromisoformat(a["events_through"]) < SPLIT for a in answers)


def _ready_when(client: TestClient, condition: Any, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ready: dict[str, Any] = client.get("/ready").json()
        if condition(ready) or time.monotonic() > deadline:
            return ready
        time.sleep(0.05)


def test_a_restarted_redis_loses_nothing_and_the_answers_equal_the_batch(
    follow: Settings, window: dict[str, Any], tmp_path: Path
) -> None:
    """Redis restarted in the middle of the stream: readiness degrades, answers go on, and the rest is applied."""
    events: list[FlightEvent] = window["events"]
    server = RedisServer(tmp_path / "redis")
    own = follow.model_copy(update={"stream_redis_url": server.url})
    publish_tables(own, window["stale"], stream_after="0-0")
    half = len(events) // 2
    try:
        with TestClient(create_app(own)) as client:
            first = _add(connect(own.stream_redis_url), own.stream_key, events[:half])
            _answers(client, window["bodies"][:1], first[-1])
            server.stop()
            ready = _ready_when(client, lambda r: r["status"] == "degraded")
            assert ready["status"] == "degraded" and not ready["stream"]["connected"]
            meanwhile = _answers(client, window["bodies"][:3], None)  # answered while Redis is away
            assert {a["stream_position"] for a in meanwhile} == {first[-1]}
            server.start()
            rest = _add(connect(own.stream_redis_url), own.stream_key, events[half:])
            answers = _answers(client, window["bodies"], rest[-1])
            expected = _expected(client, window)
            ready = client.get("/ready").json()
    finally:
        server.stop()
    assert _mismatches(answers, expected) == []
    assert ready["status"] == "ready" and ready["stream"]["applied"] == len(events)
    assert ready["stream"]["errors"] >= 1


def test_a_duplicate_a_malformed_and_a_late_event(follow: Settings, window: dict[str, Any]) -> None:
    """Duplicates count once, a malformed entry is skipped and counted, a late event lands in its place."""
    events: list[FlightEvent] = list(window["events"])
    late = events.pop(len(events) // 4)  # sent last, after a great many that happened after it
    redis_client = connect(follow.stream_redis_url)
    publish_tables(follow, window["stale"], stream_after="0-0")
    with TestClient(create_app(follow)) as client:
        _add(redis_client, follow.stream_key, events[:10])
        redis_client.xadd(follow.stream_key, {"v": "1", "event_id": "2013-06-15/UA/1/EWR/departed"})
        _add(redis_client, follow.stream_key, events[:10])  # a redelivery of the first ten
        ids = _add(redis_client, follow.stream_key, [*events[10:], late])
        answers = _answers(client, window["bodies"], ids[-1])
        expected = _expected(client, window)
        ready = client.get("/ready").json()["stream"]
    assert _mismatches(answers, expected) == []
    assert (ready["applied"], ready["duplicates"], ready["malformed"]) == (len(events) + 1, 10, 1)
    assert ready["position"] == ids[-1]


def test_a_bad_stream_wait_header_is_a_422_naming_it(follow: Settings, window: dict[str, Any]) -> None:
    publish_tables(follow, window["stale"], stream_after="0-0")
    with TestClient(create_app(follow)) as client:
        for bad in ("later", "1-2-3", "9" * 30 + "-0", "-1-0"):
            response = client.post("/predict", json=window["bodies"][0], headers={"Lab-Stream-Wait": bad})
            assert response.status_code == 422, bad
            assert "Lab-Stream-Wait" in response.text or "lab-stream-wait" in response.text
