"""The prediction log: every answered prediction, written in batches off the request path.

A request enqueues its row before the response is sent; a writer thread drains
the queue into the log (SQLite embedded, Postgres in the full stack) in batches.
``close()`` — called on shutdown, which uvicorn runs on SIGTERM — drains what is
left, so nothing answered is missing from the log after a graceful stop.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import datetime
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(20), nullable=False),
    sa.Column("carrier", sa.String(8)),
    sa.Column("flight", sa.Integer),
    sa.Column("tailnum", sa.String(16)),
    sa.Column("origin", sa.String(8)),
    sa.Column("dest", sa.String(8)),
    sa.Column("scheduled_departure_at", sa.DateTime(timezone=True)),
    sa.Column("features", sa.Text, nullable=False),  # JSON: the exact model input
    sa.Column("missing_features", sa.Text, nullable=False),  # JSON list
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("is_delayed", sa.Boolean, nullable=False),
)


class PredictionLog:
    """Batched, thread-safe writer of prediction rows."""

    def __init__(self, url: str, batch_size: int = 500, flush_seconds: float = 0.2) -> None:
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        metadata.create_all(self.engine)
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._written = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(self, row: dict[str, Any]) -> None:
        """Queue one prediction for writing (never blocks on the database)."""
        self._queue.put(row)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    @property
    def written(self) -> int:
        return self._written

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[dict[str, Any]] = []
            try:
                item = self._queue.get(timeout=self.flush_seconds)
                if item is None:
                    stop = True
                else:
                    batch.append(item)
                while len(batch) < self.batch_size:
                    item = self._queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
            except queue.Empty:
                pass
            if batch:
                self._write(batch)
        # Drain anything queued after the stop marker.
        rest = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                rest.append(item)
        if rest:
            self._write(rest)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    conn.execute(predictions.insert(), batch)
                self._written += len(batch)
                return
            except sa.exc.OperationalError:
                log.exception("prediction log write failed (attempt %d); retrying", attempt + 1)
                threading.Event().wait(0.2 * (attempt + 1))
        log.error("dropping %d prediction log rows after repeated failures", len(batch))

    def close(self) -> None:
        """Write everything queued so far, then stop the writer."""
        self._queue.put(None)
        self._thread.join()
        self.engine.dispose()


def log_row(
    prediction_id: str,
    predicted_at: datetime,
    model_name: str,
    model_version: str,
    request: dict[str, Any],
    scheduled_departure_at: datetime,
    features: dict[str, Any],
    missing: list[str],
    probability: float,
    is_delayed: bool,
) -> dict[str, Any]:
    """The log row for one prediction."""
    return {
        "prediction_id": prediction_id,
        "predicted_at": predicted_at,
        "model_name": model_name,
        "model_version": model_version,
        "carrier": request["carrier"],
        "flight": request["flight"],
        "tailnum": request.get("tailnum"),
        "origin": request["origin"],
        "dest": request["dest"],
        "scheduled_departure_at": scheduled_departure_at,
        "features": json.dumps(features, default=str, allow_nan=False),
        "missing_features": json.dumps(missing),
        "probability": probability,
        "is_delayed": is_delayed,
    }
