"""The prediction log's table: its shape, the row for one answer, and how rows go in exactly once.

The writer (``serving.prediction_log.writer``) decides when and where rows go; this
module says what a row is and how the database takes it.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.uris import redact

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
DATETIME_COLUMNS = tuple(c.name for c in predictions.columns if isinstance(c.type, sa.DateTime))


def database_tag(url: str) -> str:
    """A short name for the database ``url`` names (credentials left out): the spool replays only its own rows."""
    parsed = sa.engine.make_url(url)
    host = parsed.host or parsed.query.get("host") or ""  # a Unix socket's folder comes as ?host=
    where = f"{parsed.get_backend_name()}://{host}:{parsed.port or ''}/{parsed.database or ''}"
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def describe_error(exc: BaseException) -> str:
    """One line for /ready and the log: the driver's own message, never a password, never a batch of rows."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    return redact(" ".join(f"{type(cause).__name__}: {cause}".split()))[:500]


def log_engine(url: str, timeout: float) -> sa.Engine:
    """An engine whose calls give up after ``timeout`` seconds instead of hanging the writer."""
    parsed = sa.engine.make_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        connect_args["timeout"] = timeout  # waiting on another writer's lock
    elif parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
        connect_args["connect_timeout"] = max(1, math.ceil(timeout))
        if "options" not in parsed.query:
            connect_args["options"] = f"-c statement_timeout={int(timeout * 1000)}"
    # hide_parameters: an error message never carries a batch of rows.
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args)


def insert_ignoring_present(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (prediction_id) DO NOTHING where the dialect has it; None elsewhere."""
    if dialect == "postgresql":
        return postgresql.insert(predictions).on_conflict_do_nothing(index_elements=["prediction_id"])
    if dialect == "sqlite":
        return sqlite.insert(predictions).on_conflict_do_nothing(index_elements=["prediction_id"])
    return None


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
