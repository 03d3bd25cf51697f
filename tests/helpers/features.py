"""A features version written by hand in the published layout (warehouse/online.py), for serving tests.

The tests need features that a build would not make (a batch that stops at an instant,
a stream position of their choosing); the layout and checks are the ones
``warehouse.online.read_current`` verifies, so the API loads them as it loads a build's.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.settings import Settings
from ingestion.events import FlightEvent
from warehouse.online import FORMAT, MANIFEST, POINTER, features_root


def publish_tables(settings: Settings, tables: dict[str, pa.Table], *, stream_after: str | None = None) -> str:
    """Write ``tables`` as a new current version of the features of ``settings`` (a folder); its version."""
    root = Path(features_root(settings).removeprefix("file://"))
    version = f"test-{uuid.uuid4().hex[:12]}"
    folder = root / version
    folder.mkdir(parents=True)
    entries = {}
    for name, table in tables.items():
        path = folder / f"{name}.parquet"
        pq.write_table(table, path)
        data = path.read_bytes()
        entries[name] = {
            "file": path.name,
            "relation": f"test.{name}",
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    manifest: dict[str, object] = {
        "format": FORMAT,
        "version": version,
        "dbt": {"target": settings.dbt_target, "invocation_ids": [version]},
        "lake_snapshots": {},
        "tables": entries,
    }
    if stream_after is not None:
        manifest["stream"] = {"key": settings.stream_key, "after": stream_after}
    data = json.dumps(manifest).encode()
    (folder / MANIFEST).write_bytes(data)
    pointer = {"version": version, "manifest_sha256": hashlib.sha256(data).hexdigest()}
    (root / POINTER).write_text(json.dumps(pointer))
    return version


def event_of_row(row: dict[str, Any]) -> FlightEvent:
    """A row of ``online_flight_outcomes`` as the event that reports it.

    The flight key (local date, carrier, number, origin) and the kind come from the
    row's ``event_id``, the outcome (instants, delay) from the row itself, so the event
    is exactly the row the batch indexes, and FlightEvent checks ``at`` is scheduled + delay.
    """
    day, carrier, number, origin, kind = row["event_id"].split("/")
    year, month, date_of_month = (int(part) for part in day.split("-"))
    scheduled: datetime = row["scheduled_departure_at"]
    cancelled = kind == "cancelled"
    assert cancelled == bool(row["is_cancelled"])
    return FlightEvent(
        kind="cancelled" if cancelled else "departed",
        year=year,
        month=month,
        day=date_of_month,
        carrier=carrier,
        flight=int(number),
        origin=origin,
        dest=row["dest"],
        tailnum=row["tailnum"],
        scheduled_departure_at=scheduled,
        at=row["outcome_known_at"],
        departure_delay_minutes=None if cancelled else row["departure_delay_minutes"],
    )
