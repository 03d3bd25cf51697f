"""Hostile HTTP input: each gets a small JSON 4xx naming what was wrong, never a 5xx.

No model and no lake: every answer here is given before a route would score a
flight (a route that gets that far answers 503, no model being served). Requests
with exact bytes (header values, chunked bodies) go straight to the ASGI app,
since an HTTP client library normalises them; the same inputs against a real
server process, with the trained model, are in ``test_serving``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.settings import Settings
from serving.app import create_app
from serving.errors import EXCERPT_CHARS, MAX_ERRORS, excerpt
from serving.schemas import FlightRequest, ReloadResult
from serving.services import Services

FLIGHT = {
    "carrier": "UA",
    "flight": 1545,
    "tailnum": "N14228",
    "origin": "EWR",
    "dest": "IAH",
    "scheduled_departure": "2013-01-01T05:15:00",
}
TOKEN = "s3cret-token"


@pytest.fixture
def settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(home=tmp_path / ".lab", admin_token=SecretStr(TOKEN))


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The real app and middleware; its services are built but not started (no model: /predict is a 503)."""
    app = create_app(settings)
    app.state.services = Services(settings)
    return app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def _post_json(client: TestClient, path: str, text: str | bytes) -> Any:
    return client.post(path, content=text, headers={"content-type": "application/json"})


def _strict_json(response: Any) -> Any:
    """The body as strict JSON: NaN or Infinity in an answer fails here."""

    def refuse(token: str) -> None:
        raise AssertionError(f"{token} in {response.text[:200]}")

    return json.loads(response.content, parse_constant=refuse)


def _assert_small_excerpts(body: dict[str, Any]) -> None:
    """Every value shown back is an excerpt: strings and container texts at most EXCERPT_CHARS long."""
    assert len(body["detail"]) <= MAX_ERRORS
    for error in body["detail"]:
        assert {"type", "loc", "msg", "input"} <= error.keys()
        for value in [error["input"], *error.get("ctx", {}).values(), *error["loc"]]:
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            assert len(shown) <= EXCERPT_CHARS, shown


def _with_token(flight: dict[str, Any], field: str, token: str) -> str:
    """``flight`` as JSON text with ``field``'s value replaced by the bare ``token`` (not valid strict JSON)."""
    placeholder = "@@non-finite@@"
    return json.dumps({**flight, field: placeholder}).replace(f'"{placeholder}"', token)


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize("field", [*FlightRequest.model_fields, "unexpected"])
def test_a_non_finite_number_in_any_field_is_a_422_naming_it(client: TestClient, field: str, token: str) -> None:
    """NaN and Infinity (Python's json accepts them; 1e400 overflows to Infinity) were a 500."""
    single = _post_json(client, "/predict", _with_token(FLIGHT, field, token))
    assert single.status_code == 422, single.text
    assert _strict_json(single)["detail"][0]["loc"] == ["body", field]

    flights = f"[{json.dumps(FLIGHT)}, {_with_token(FLIGHT, field, token)}]"
    batch = _post_json(client, "/predict/batch", f'{{"flights": {flights}}}')
    assert batch.status_code == 422, batch.text
    assert _strict_json(batch)["detail"][0]["loc"] == ["body", "flights", 1, field]


@pytest.mark.parametrize(
    ("path", "text", "loc"),
    [
        ("/predict", "NaN", ["body"]),
        ("/predict", "Infinity", ["body"]),
        ("/predict/batch", '{"flights": NaN}', ["body", "flights"]),
        ("/predict/batch", '{"flights": [NaN]}', ["body", "flights", 0]),
        ("/predict/batch", '{"flights": [], "NaN": -Infinity}', ["body", "flights"]),
    ],
)
def test_a_non_finite_number_in_place_of_an_object_or_list_is_a_422(
    client: TestClient, path: str, text: str, loc: list[Any]
) -> None:
    response = _post_json(client, path, text)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in _strict_json(response)["detail"]]


def test_a_non_finite_value_inside_a_rejected_object_is_shown_as_text(client: TestClient) -> None:
    response = _post_json(client, "/predict/batch", '{"flights": [{"flight": NaN, "dest": Infinity}]}')
    assert response.status_code == 422
    missing = next(e for e in _strict_json(response)["detail"] if e["type"] == "missing")
    assert missing["input"] == {"flight": "NaN", "dest": "Infinity"}


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        # Over the batch limit (the whole list was echoed back).
        ("/predict/batch", {"flights": [FLIGHT] * 1001}, ["body", "flights"]),
        # A long string where a short code is expected.
        ("/predict", {**FLIGHT, "carrier": "Z" * 50_000}, ["body", "carrier"]),
        # A long unexpected key: the key is part of the location.
        ("/predict", {**FLIGHT, "k" * 50_000: 1}, ["body", "k" * (EXCERPT_CHARS - 1) + "…"]),
        # A big number, too many digits to show.
        ("/predict", {**FLIGHT, "flight": 10**4000}, ["body", "flight"]),
        # A lone surrogate (valid JSON, not encodable as UTF-8) was echoed into an answer that could not be written.
        ("/predict", {**FLIGHT, "tailnum": "\ud800" * 1000}, ["body", "tailnum"]),
    ],
)
def test_error_bodies_show_only_an_excerpt_of_the_input(
    client: TestClient, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    text = json.dumps(body)
    assert len(text) > 5 * EXCERPT_CHARS
    response = _post_json(client, path, text)
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 2000
    detail = _strict_json(response)["detail"]
    assert detail[0]["loc"] == loc
    _assert_small_excerpts({"detail": detail})


def test_a_batch_of_bad_flights_lists_the_first_errors_and_counts_them_all(client: TestClient) -> None:
    bad = {**FLIGHT, "carrier": "?", "origin": "?", "dest": "?"}
    response = client.post("/predict/batch", json={"flights": [bad] * 300})
    assert response.status_code == 422
    body = _strict_json(response)
    assert len(body["detail"]) == MAX_ERRORS and body["errors_total"] == 900
    assert body["detail"][0]["loc"] == ["body", "flights", 0, "carrier"]
    assert len(response.content) < 200 * MAX_ERRORS


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),  # FastAPI's JSON decode error, at a position
        (b'{"carrier": "\xff\xfe"}', "application/json", 400),  # not UTF-8
        (b"[" * 50_000 + b"]" * 50_000, "application/json", 400),  # deeper than the parser goes
        (b'{"flight": ' + b"9" * 5000 + b"}", "application/json", 400),  # more digits than Python converts
        (json.dumps(FLIGHT).encode() * 100, "text/plain", 422),  # not declared JSON: the body is "bytes"
        (b"", "application/json", 422),  # no body: the body is missing
    ],
)
def test_bodies_that_are_not_json_are_a_4xx(client: TestClient, content: bytes, content_type: str, status: int) -> None:
    response = client.post("/predict", content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text[:500]
    body = _strict_json(response)
    if status == 422:
        assert body["detail"][0]["loc"][0] == "body"
        _assert_small_excerpts(body)
    else:
        assert body["detail"] == "There was an error parsing the body"


def test_every_answer_to_a_bad_request_is_json(client: TestClient) -> None:
    """404, 405, 401 and 503 keep FastAPI's {"detail": "..."} shape."""
    for response, status in [
        (client.get("/nope"), 404),
        (client.get("/predict"), 405),
        (client.post("/admin/reload"), 401),
        (client.post("/predict", json=FLIGHT), 503),  # valid, but no model is served here
    ]:
        assert response.status_code == status
        assert isinstance(_strict_json(response)["detail"], str)


def test_an_unexpected_error_is_a_json_500(app: FastAPI) -> None:
    """A bug, not user input: answered as JSON, and re-raised for the server to log with its traceback."""

    def broken(flights: list[FlightRequest]) -> None:
        raise RuntimeError("a bug")

    app.state.services.predict = broken
    response = TestClient(app, raise_server_exceptions=False).post("/predict", json=FLIGHT)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    with pytest.raises(RuntimeError, match="a bug"):
        TestClient(app).post("/predict", json=FLIGHT)


# --- straight to the ASGI app: exact bytes, and what the app reads -------------------------


class Sent:
    """One request sent to the ASGI app: the answer, and how much of the body the app asked for."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.chunks_read = 0

    def json(self) -> Any:
        return json.loads(self.body)


def _send(
    app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: Iterable[bytes] = ()
) -> Sent:
    """``method path`` with these exact header bytes; the body is delivered chunk by chunk as the app asks."""
    sent = Sent()
    pending = iter(chunks)

    async def receive() -> dict[str, Any]:
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent.chunks_read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.status = message["status"]
        elif message["type"] == "http.response.body":
            sent.body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return sent


JSON = (b"content-type", b"application/json")


def test_a_body_declared_over_the_limit_is_a_413_before_any_of_it_is_read(app: FastAPI, settings: Settings) -> None:
    limit = settings.serve_max_body_bytes
    chunk = b" " * 65536
    started = time.perf_counter()
    sent = _send(app, "POST", "/predict/batch", [JSON, (b"content-length", b"%d" % (45 * 2**20))], [chunk] * 720)
    assert time.perf_counter() - started < 1.0
    assert sent.status == 413 and sent.chunks_read == 0
    assert str(limit) in sent.json()["detail"]
    # One byte over the limit is enough; at the limit the body is read and parsed (and is not JSON).
    over = b" " * (limit + 1)
    assert _send(app, "POST", "/predict", [JSON, (b"content-length", b"%d" % len(over))], [over]).status == 413
    at = b" " * limit
    sent = _send(app, "POST", "/predict", [JSON, (b"content-length", b"%d" % len(at))], [at])
    assert sent.status == 422 and sent.chunks_read == 1


def test_a_chunked_body_is_read_no_further_than_the_limit(app: FastAPI, settings: Settings) -> None:
    """No Content-Length: the bytes are counted as the app reads them; it stops at the chunk that passes the limit."""
    chunk = b" " * 4096
    sent = _send(app, "POST", "/predict/batch", [JSON, (b"transfer-encoding", b"chunked")], [chunk] * 11_520)
    assert sent.status == 413
    limit = settings.serve_max_body_bytes
    assert sent.chunks_read == limit // len(chunk) + 1
    assert sent.json() == {"detail": f"the request body is larger than the limit of {limit} bytes"}
    # Under the limit, chunked bodies are read as usual.
    body = json.dumps({"flights": [FLIGHT]}).encode()
    sent = _send(app, "POST", "/predict/batch", [JSON, (b"transfer-encoding", b"chunked")], [body[:10], body[10:]])
    assert sent.status == 503 and sent.chunks_read == 2  # valid; no model here


def test_the_body_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LAB_SERVE_MAX_BODY_BYTES", "100")
    settings = Settings(home=tmp_path)
    assert settings.serve_max_body_bytes == 100
    monkeypatch.delenv("LAB_SERVE_MAX_BODY_BYTES")
    default = Settings(home=tmp_path).serve_max_body_bytes
    # The largest valid request, 1,000 flights with the longest values, fits with room to spare.
    longest = {**FLIGHT, "flight": 9999, "tailnum": "N" * 8, "scheduled_departure": "2013-01-01T05:15:00.000000+05:30"}
    assert 2 * len(json.dumps({"flights": [longest] * 1000}, indent=2)) < default


@pytest.mark.parametrize(
    "token",
    [
        b"\xc3\xa9",  # é in UTF-8: non-ASCII made compare_digest raise TypeError, a 500
        b"\xe9",  # é in latin-1
        b"\xff\x80\x00",
        TOKEN.encode() + b"\xff",
        TOKEN.encode()[:-1],
        b"",
        b" " * 10_000,
    ],
)
def test_a_bad_admin_token_of_any_bytes_is_a_401(app: FastAPI, token: bytes) -> None:
    sent = _send(app, "POST", "/admin/reload", [(b"x-admin-token", token)])
    assert sent.status == 401
    assert sent.json() == {"detail": "a valid X-Admin-Token header is required"}


def test_the_admin_token_is_compared_as_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The right token passes, non-ASCII too (sent as its UTF-8 bytes); any other spelling does not."""
    for secret in [TOKEN, "sécret-tökén"]:
        settings = Settings(home=tmp_path, admin_token=SecretStr(secret))
        app = create_app(settings)
        app.state.services = Services(settings)
        app.state.services.reload = lambda: ReloadResult(previous_version="1", version="1", features_version="x")
        assert _send(app, "POST", "/admin/reload", [(b"x-admin-token", secret.encode())]).status == 200
        assert _send(app, "POST", "/admin/reload", [(b"x-admin-token", secret.encode("latin-1"))]).status == (
            200 if secret.isascii() else 401
        )
        assert _send(app, "POST", "/admin/reload", [(b"x-admin-token", secret.upper().encode())]).status == 401
    no_token = Settings(home=tmp_path)
    app = create_app(no_token)
    app.state.services = Services(no_token)
    assert _send(app, "POST", "/admin/reload", [(b"x-admin-token", b"")]).status == 401


def test_an_excerpt_is_short_valid_json_and_costs_little_for_a_huge_value() -> None:
    assert excerpt(None) is None and excerpt(True) is True and excerpt(1.5) == 1.5 and excerpt(7) == 7
    assert excerpt(float("nan")) == "NaN" and excerpt(float("-inf")) == "-Infinity"
    assert excerpt({"a": [1, float("inf")]}) == {"a": [1, "Infinity"]}
    assert excerpt("x" * 1000) == "x" * (EXCERPT_CHARS - 1) + "…"
    assert excerpt("\ud800") == "\\ud800"
    assert excerpt(b"\xff" * 3) == "\ufffd" * 3
    assert len(excerpt(10**500)) == EXCERPT_CHARS
    nested: Any = []
    for _ in range(5000):  # deeper than a recursive walk could go
        nested = [nested]
    assert excerpt(nested) == "[" * (EXCERPT_CHARS - 1) + "…"
    huge = [{"carrier": "UA", "flight": i} for i in range(1_000_000)]
    started = time.perf_counter()
    shown = excerpt(huge)
    assert time.perf_counter() - started < 0.05
    assert shown.startswith('[{"carrier":"UA","flight":0},') and len(shown) == EXCERPT_CHARS
