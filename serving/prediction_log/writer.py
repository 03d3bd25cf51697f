"""The prediction log: every answered prediction, written in batches off the request path, never silently lost.

A request queues its row (``record``) before its answer is built; a writer
thread drains the queue into the log database (SQLite embedded, Postgres in the
full stack) in batches. The request itself never waits on a disk or a database.

Where a row goes
    The writer inserts a batch, retrying with the project's one backoff policy
    (``core.retry``; ``LAB_PREDICTION_LOG_RETRIES`` retries). If the database
    still refuses it — down, unreachable, a trigger raising, any error at all —
    the batch goes to the spool (``serving.prediction_log.spool``: append-only,
    fsync'd files under ``LAB_PREDICTION_LOG_SPOOL_DIR``). Later batches go
    straight to the spool while the database is probed now and then (the same
    backoff, capped); once an insert succeeds the spool is replayed, oldest
    first. Every insert skips rows already in the log (``prediction_id`` is the
    key), so a batch written twice — a retry after a lost commit
    acknowledgement, a replay cut short by a crash — is there once. No error
    ends the writer: an unexpected one is logged and the loop goes on.

When an answer may be given (the rule behind every 200)
    ``record`` accepts a row only while the log is taking rows: the writer
    runs, the database or the spool took the last rows offered, fewer than
    ``LAB_PREDICTION_LOG_MAX_PENDING`` rows wait in memory, and the log is not
    shutting down. Otherwise it raises ``LogUnavailable`` and the API answers
    503. So a 200 is only ever given for a row that is in memory while the
    writer is healthy (and then reaches the database or the spool unless the
    process dies first), or for a row already durable.

What can still be lost
    Only rows accepted but not yet written or spooled, which live in memory:

    - SIGKILL, a crash or the OOM killer loses them: at most the backlog at that
      moment (``/ready`` shows it; ``bench/prediction_log.py`` measures it under
      a burst).
    - SIGTERM drains to the database for at most
      ``LAB_PREDICTION_LOG_DRAIN_SECONDS`` and spools the rest. Only if the
      spool cannot be written either are rows lost, and then they are counted
      (``lost`` on ``/ready`` until exit) and their ids logged at ERROR.
    - When the database and the spool fail together, rows already accepted
      wait in memory (while new requests get 503) and are written as soon as
      either comes back.

Start-up needs no database: the table is created on the first successful
insert, and until then rows are spooled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from core.retry import backoff_delay, with_retries
from core.settings import Settings
from serving.prediction_log.spool import Spool
from serving.prediction_log.table import (
    DATETIME_COLUMNS,
    database_tag,
    describe_error,
    insert_ignoring_present,
    log_engine,
    metadata,
    predictions,
)

log = logging.getLogger(__name__)

# How long close() waits for the writer beyond the drain bound before spooling
# what it holds itself (the writer is then stuck in a call that does not return).
JOIN_GRACE_SECONDS = 1.0


class LogUnavailable(RuntimeError):
    """The log cannot take a row now: the request must not be answered as if it were logged."""


@dataclass(frozen=True)
class LogHealth:
    """What ``/ready`` shows of the log."""

    # ok: rows go to the database. degraded: rows go to (or wait in) the spool,
    # answers are still given. failing: rows cannot be kept, /predict answers 503.
    status: Literal["ok", "degraded", "failing"]
    backlog: int  # accepted rows in memory only: what a SIGKILL now would lose
    spooled: int  # rows in the spool, waiting for the database
    written: int  # rows this process put in the database (replayed ones included)
    lost: int  # rows accepted and then neither written nor spooled (only ever at shutdown)
    refusal: str | None  # why rows are refused, when failing
    last_error: str | None  # the last database or spool error, passwords redacted


class PredictionLog:
    """Bounded, thread-safe, batched writer of prediction rows with a durable spool."""

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        max_pending: int = 100_000,
        batch_size: int = 500,
        flush_seconds: float = 0.2,
        retries: int = 3,
        drain_seconds: float = 10.0,
        spool_max_bytes: int = 1 << 30,
        db_timeout_seconds: float = 5.0,
    ) -> None:
        self.engine = log_engine(url, db_timeout_seconds)
        self.spool = Spool(
            spool_dir, max_bytes=spool_max_bytes, datetime_columns=DATETIME_COLUMNS, tag=database_tag(url)
        )
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.retries = retries
        self.drain_seconds = drain_seconds
        self._insert_statement = insert_ignoring_present(self.engine.dialect.name)
        self._schema_ready = False

        # Shared with request threads, under _lock.
        self._lock = threading.Lock()
        self._buffer: deque[dict[str, Any]] = deque()
        self._backlog = 0  # rows accepted and not yet durable: the buffer plus _held
        self._closed = False
        self._writer_alive = True
        self._db_ok = True  # the database took the last rows offered (or nothing was offered yet)
        self._spool_ok = True  # the spool took the last rows offered (or nothing was offered yet)
        self._written = 0
        self._lost = 0
        self._last_error: str | None = None

        # The writer's own.
        self._held: list[dict[str, Any]] = []  # taken from the buffer, not yet durable
        self._probes = 0
        self._next_probe = 0.0
        self._stop_at = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> PredictionLog:
        assert settings.prediction_log_spool_dir is not None  # filled in by Settings
        return cls(
            settings.prediction_log_url,
            settings.prediction_log_spool_dir,
            max_pending=settings.prediction_log_max_pending,
            retries=settings.prediction_log_retries,
            drain_seconds=settings.prediction_log_drain_seconds,
            spool_max_bytes=settings.prediction_log_spool_max_bytes,
            db_timeout_seconds=settings.prediction_log_db_timeout_seconds,
        )

    # --- the request side ------------------------------------------------------------

    def record(self, rows: list[dict[str, Any]]) -> None:
        """Queue the rows of one request for writing, all or none; never blocks on the database or the disk.

        All or none: a batch request whose last rows would be refused must not
        leave its first rows logged for answers that are never given.

        Raises:
            LogUnavailable: the log cannot take the rows (see the module's rule).
        """
        with self._lock:
            reason = self._refusal(len(rows))
            if reason is not None:
                raise LogUnavailable(reason)
            self._buffer.extend(rows)
            self._backlog += len(rows)
        if not self._wake.is_set():
            self._wake.set()

    def _refusal(self, rows: int) -> str | None:
        if self._closed:
            return "the prediction log is shutting down"
        if not self._writer_alive:
            return "the prediction log writer has stopped"
        if not self._db_ok and not self._spool_ok:
            return "neither the log database nor the spool can take rows"
        if self._backlog + rows > self.max_pending:
            return f"{self._backlog} answered rows are waiting to be written (the cap is {self.max_pending})"
        return None

    def health(self) -> LogHealth:
        with self._lock:
            refusal = self._refusal(1)
            backlog, db_ok, written, lost, last_error = (
                self._backlog,
                self._db_ok,
                self._written,
                self._lost,
                self._last_error,
            )
        spooled = self.spool.rows
        status: Literal["ok", "degraded", "failing"] = (
            "failing" if refusal is not None else "degraded" if not db_ok or spooled else "ok"
        )
        return LogHealth(status, backlog, spooled, written, lost, refusal, last_error)

    @property
    def written(self) -> int:
        return self._written

    # --- the writer ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._probe()
            while not self._stopping.is_set():
                try:
                    self._cycle()
                except Exception as exc:  # the writer outlives whatever goes wrong
                    self._note_error("writer", exc)
                    log.exception("prediction log writer: unexpected error; carrying on")
                    self._stopping.wait(backoff_delay(1))
            self._drain()
        except Exception:
            log.exception("prediction log writer: unexpected error while draining")
        finally:
            with self._lock:
                self._writer_alive = False

    def _probe(self) -> None:
        """Find out whether the database, or else the spool, can take rows.

        Run at start-up, so that /ready and /predict tell the truth before the
        first row arrives, and while the database is away and no row is there
        to try it with (when neither can take rows, none is accepted).
        """
        try:
            self._ping()
        except Exception as exc:
            self._db_failed(exc)
        else:
            self._db_back()
            return
        try:
            self.spool.check()
        except Exception as exc:
            self._spool_failed(exc)
        else:
            self._spool_back()

    def _cycle(self) -> None:
        if self._held:  # the last rows could be put nowhere: retry them when the next probe is due
            self._wake.wait(max(0.0, self._next_probe - time.monotonic()))
        else:
            self._wake.wait(self.flush_seconds)
        self._wake.clear()
        if self._stopping.is_set():
            return
        if self._held and time.monotonic() < self._next_probe:
            return
        rows = self._take(self.batch_size)
        if rows:
            self._persist(rows)
        if not self._held:
            self._replay_if_due()
        if not self._held and not self._db_ok and time.monotonic() >= self._next_probe:
            self._probe()  # no row tried the database lately: find out whether it is back
        if self._buffer:
            self._wake.set()

    def _take(self, count: int) -> list[dict[str, Any]]:
        """Move up to ``count`` rows from the buffer to the held rows; all held rows."""
        with self._lock:
            for _ in range(min(count, len(self._buffer))):
                self._held.append(self._buffer.popleft())
            return list(self._held)

    def _persist(self, rows: list[dict[str, Any]]) -> bool:
        """The database if it is up (or due a probe), else the spool; False if neither took ``rows``."""
        if (self._db_ok or time.monotonic() >= self._next_probe) and self._write_db(
            rows, self.retries if self._db_ok else 0
        ):
            return True
        return self._write_spool(rows)

    def _write_db(self, rows: list[dict[str, Any]], retries: int) -> bool:
        try:
            with_retries(lambda _: self._insert(rows), retries=retries, retry_on=(Exception,), what="prediction log")
        except Exception as exc:
            self._db_failed(exc)
            return False
        self._settle(len(rows), written=True)
        self._db_back()
        return True

    def _write_spool(self, rows: list[dict[str, Any]], timeout: float = -1) -> bool:
        try:
            self.spool.append(rows, timeout)
        except Exception as exc:
            self._spool_failed(exc)
            return False
        self._spool_back()
        self._settle(len(rows), written=False)
        return True

    def _spool_failed(self, exc: BaseException) -> None:
        with self._lock:
            was_ok, self._spool_ok = self._spool_ok, False
        self._note_error("spool", exc)
        self._schedule_probe()
        if was_ok:
            log.error(
                "prediction log: the spool %s cannot take rows either (%s); /predict answers 503 until the"
                " database or the spool is back",
                self.spool.directory,
                self._last_error,
            )

    def _spool_back(self) -> None:
        with self._lock:
            was_ok, self._spool_ok = self._spool_ok, True
        if not was_ok:
            log.warning("prediction log: the spool %s takes rows again", self.spool.directory)

    def _replay_if_due(self) -> None:
        if self.spool.rows <= 0 or (not self._db_ok and time.monotonic() < self._next_probe):
            return
        try:
            replayed = self.spool.replay_one(self._insert, self.batch_size)
        except Exception as exc:
            self._db_failed(exc)
            return
        if replayed:
            with self._lock:
                self._written += replayed
            log.info("prediction log: replayed %d spooled rows (%d still spooled)", replayed, self.spool.rows)
        self._db_back()

    def _drain(self) -> None:
        """On close: the database for at most ``drain_seconds``, then the spool; count what neither took."""
        deadline = self._stop_at + self.drain_seconds
        while self._held or self._buffer:
            now = time.monotonic()
            if now < deadline and (self._db_ok or now >= self._next_probe):
                rows = self._take(self.batch_size)
                if self._write_db(rows, retries=0):
                    continue
            if self._write_spool(self._take(len(self._buffer))):
                continue
            if time.monotonic() >= deadline:
                break
            time.sleep(min(backoff_delay(1), max(0.0, deadline - time.monotonic())))
        self._lose(self._take(len(self._buffer)))

    # --- the database ----------------------------------------------------------------

    def _ping(self) -> None:
        self._ensure_schema()
        with self.engine.connect() as conn:
            conn.execute(sa.text("select 1"))

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            metadata.create_all(self.engine)
            self._schema_ready = True

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` in one transaction, skipping any already in the log."""
        self._ensure_schema()
        with self.engine.begin() as conn:
            if self._insert_statement is not None:
                conn.execute(self._insert_statement, rows)
                return
            ids = [row["prediction_id"] for row in rows]
            present: set[str] = set(
                conn.execute(sa.select(predictions.c.prediction_id).where(predictions.c.prediction_id.in_(ids)))
                .scalars()
                .all()
            )
            fresh = [row for row in rows if row["prediction_id"] not in present]
            if fresh:
                conn.execute(predictions.insert(), fresh)

    def _db_failed(self, exc: BaseException) -> None:
        with self._lock:
            was_ok, self._db_ok = self._db_ok, False
        self._note_error("database", exc)
        self._schedule_probe()
        if was_ok:
            log.warning("prediction log: the database refuses rows (%s); spooling until it is back", self._last_error)

    def _db_back(self) -> None:
        with self._lock:
            was_ok, self._db_ok = self._db_ok, True
        self._probes = 0
        if not was_ok:
            log.warning("prediction log: the database takes rows again")

    def _schedule_probe(self) -> None:
        self._probes += 1
        self._next_probe = time.monotonic() + backoff_delay(self._probes)

    # --- bookkeeping -----------------------------------------------------------------

    def _settle(self, count: int, *, written: bool) -> None:
        """The held rows are durable now (in the database if ``written``, else in the spool)."""
        with self._lock:
            self._held = []
            self._backlog -= count
            if written:
                self._written += count

    def _lose(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self._lock:
            self._held = []
            self._backlog -= len(rows)
            self._lost += len(rows)
        log.error(
            "prediction log: %d answered rows could be neither written nor spooled and are lost (%s);"
            " their prediction ids follow",
            len(rows),
            self._last_error,
        )
        ids = [str(row.get("prediction_id")) for row in rows]
        for start in range(0, len(ids), 1000):
            log.error("lost prediction ids: %s", " ".join(ids[start : start + 1000]))

    def _note_error(self, where: str, exc: BaseException) -> None:
        text = f"{where}: {describe_error(exc)}"
        with self._lock:
            self._last_error = text

    # --- shutdown --------------------------------------------------------------------

    def close(self) -> None:
        """Refuse new rows, drain within ``drain_seconds`` (the database, then the spool), stop the writer."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_at = time.monotonic()
        self._stopping.set()
        self._wake.set()
        self._thread.join(self.drain_seconds + JOIN_GRACE_SECONDS)
        if self._thread.is_alive():
            self._rescue()
        self.spool.close()
        self.engine.dispose()

    def _rescue(self) -> None:
        """The writer is stuck (a database call that does not return): spool what it holds from here.

        Should the stuck call succeed after all, its rows are in the database
        and in the spool; replay skips them.
        """
        with self._lock:
            rows = [*self._held, *self._buffer]
            self._buffer.clear()
        log.error(
            "prediction log writer did not finish within %.1f s; spooling its %d rows from here",
            self.drain_seconds,
            len(rows),
        )
        if rows and not self._write_spool(rows, timeout=JOIN_GRACE_SECONDS):
            self._lose(rows)
