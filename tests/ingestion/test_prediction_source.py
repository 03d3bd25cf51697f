"""The API's prediction log as a declared source: exported, landed and loaded like any raw file.

The log is written with the API's own table and row shape (``serving.prediction_log.table``),
on SQLite here and on Postgres in the integration variant.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from core.errors import LabError
from core.settings import Settings
from ingestion.declarations import load_declarations
from ingestion.loader import LoadResult, ingest
from ingestion.storage import open_catalog
from serving.prediction_log import log_row, metadata, predictions

LINEAGE = ["_source_file", "_source_checksum", "_load_id", "_loaded_at"]


def _with_log(settings: Settings) -> Settings:
    """The log in SQLite under the home (embedded), or in the Postgres database the catalog uses."""
    if settings.catalog_uri.startswith("postgresql"):
        return settings.model_copy(update={"prediction_log_url": settings.catalog_uri})
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings.model_copy(update={"prediction_log_url": f"sqlite:///{settings.home / 'predictions.db'}"})


def _write(settings: Settings, departures: list[datetime]) -> list[dict[str, object]]:
    """One logged prediction per scheduled departure, as the API writes them."""
    rows = [
        log_row(
            str(uuid.uuid4()),
            datetime(2026, 11, 29, 1, 0, i, tzinfo=UTC),
            "flight_delay",
            "3",
            {
                "carrier": "UA",
                "flight": 1000 + i,
                "tailnum": None if i % 2 else "N14228",
                "origin": "EWR",
                "dest": "IAH",
            },
            when,
            {"carrier": "UA", "distance_miles": 1400.0, "wind_gust_mph": None},
            ["wind_gust_mph"],
            0.1 + i / 100,
            False,
        )
        for i, when in enumerate(departures)
    ]
    engine = sa.create_engine(settings.prediction_log_url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)
    engine.dispose()
    return rows


def _loaded(settings: Settings) -> pa.Table:
    return open_catalog(settings).load_table("raw.predictions").scan().to_arrow().sort_by("prediction_id")


def test_no_log_yet_loads_nothing_and_creates_no_table(local_settings: Settings) -> None:
    settings = _with_log(local_settings)
    result = ingest(load_declarations()["predictions"], settings)
    assert (result.rows_in, result.snapshot_id, result.files) == (0, None, [])
    assert not open_catalog(settings).table_exists("raw.predictions")


def test_the_log_loads_exactly_by_month_and_again_unchanged(any_settings: Settings) -> None:
    settings = _with_log(any_settings)
    decl = load_declarations()["predictions"]
    july = datetime(2013, 7, 31, 23, 30, tzinfo=UTC)
    rows = _write(settings, [july, july + timedelta(minutes=10), july + timedelta(hours=1), july + timedelta(days=3)])
    first = ingest(decl, settings)
    assert (first.rows_in, first.rows_loaded, first.rows_quarantined) == (4, 4, 0)
    table = _loaded(settings)
    want = sorted(rows, key=lambda r: str(r["prediction_id"]))
    for column in ("prediction_id", "carrier", "flight", "tailnum", "features", "missing_features", "probability"):
        assert table.column(column).to_pylist() == [r[column] for r in want], column
    assert table.column("scheduled_departure_at").to_pylist() == [r["scheduled_departure_at"] for r in want]
    assert set(table.column("_source_checksum").to_pylist()) == {first.files[0].sha256}
    iceberg = open_catalog(settings).load_table("raw.predictions")
    assert [f.transform.__class__.__name__ for f in iceberg.spec().fields] == ["MonthTransform"]

    # The same rows again: the same bytes land once, and the table holds the same rows.
    again = ingest(decl, settings)
    assert again.files[0].sha256 == first.files[0].sha256
    assert _loaded(settings).drop_columns(LINEAGE) == table.drop_columns(LINEAGE)

    # New predictions for August only: a month's load replaces that month and leaves July as it was.
    _write(settings, [july + timedelta(days=5)])
    august: LoadResult = ingest(decl, settings, partition="2013-08")
    assert august.rows_loaded == 3  # 00:30 on August 1, August 3, and the new one (all UTC)
    reloaded = _loaded(settings)
    assert reloaded.num_rows == 5
    july_rows = reloaded.filter(
        pc.less(
            reloaded.column("scheduled_departure_at"),
            pa.scalar(july + timedelta(hours=1), pa.timestamp("us", tz="UTC")),
        )
    )
    assert set(july_rows.column("_load_id").to_pylist()) == {again.load_id}


def test_a_log_that_cannot_be_read_is_a_clear_error(local_settings: Settings) -> None:
    garbage = local_settings.home / "predictions.db"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a database " * 100)
    settings = local_settings.model_copy(update={"prediction_log_url": f"sqlite:///{garbage}"})
    with pytest.raises(LabError, match=r"cannot read the prediction log at sqlite:///.*predictions\.db: DatabaseError"):
        ingest(load_declarations()["predictions"], settings)
