"""Ingestion: declared sources landing in Iceberg, on both storage backends."""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from core.errors import BadRowsError, DeclarationError, LabError, SchemaMismatchError
from core.settings import Settings
from ingestion.commit import commit_with_retry, data_files_in
from ingestion.declarations import SourceDeclaration, load_declarations
from ingestion.loader import ingest
from ingestion.status import lake_status, quarantined_rows
from ingestion.storage import ObjectStore, open_catalog
from ingestion.tables import ensure_table, evolve_schema
from ingestion.writer import DataFileWriter, project
from tests.helpers.declarations import declare
from tests.helpers.fingerprints import lake_fingerprint

EVENTS_DECLARATION = """
name: events
input:
  path: {path}
format: csv
primary_key: [event_id]
partition:
  column: happened_at
mode: overwrite_partition
columns:
  - {{name: event_id, type: long, required: true}}
  - {{name: kind, type: string, required: true}}
  - {{name: amount, type: double}}
  - {{name: happened_at, type: timestamp, required: true}}
"""


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def events_source(settings: Settings, rows: list[list[str]], header: list[str] | None = None) -> SourceDeclaration:
    data = write_csv(settings.home.parent / "events.csv", header or ["event_id", "kind", "amount", "happened_at"], rows)
    return declare(settings, EVENTS_DECLARATION.format(path=data))


GOOD_ROWS = [
    ["1", "click", "1.5", "2024-01-03T10:00:00Z"],
    ["2", "view", "NA", "2024-01-20T11:30:00Z"],
    ["3", "click", "2", "2024-02-01T00:00:00Z"],
    ["4", "buy", "10.25", "2024-02-11T09:15:00Z"],
]


def test_bundled_declarations_parse() -> None:
    decls = load_declarations()
    assert set(decls) == {"flights", "weather", "planes", "airlines", "airports", "predictions"}
    assert decls["flights"].mode == "overwrite_partition"
    assert decls["planes"].primary_key == ["tailnum"]
    assert all(len(d.input_files()) == 1 for d in decls.values() if not d.input.prediction_log)
    assert decls["predictions"].partition is not None  # the API's log, by month of scheduled departure


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("columns: [{name: a, type: decimal}]", "columns.0.type"),
        ("primary_key: [b]\ncolumns: [{name: a}]", "primary_key column 'b' is not a declared column"),
        ("mode: upsert\ncolumns: [{name: a}]", "mode upsert needs a primary_key"),
        ("columns: [{name: a}, {name: a}]", "duplicate columns: a"),
    ],
)
def test_bad_declarations_name_the_problem(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "bad.yml").write_text(f"name: bad\ninput: {{path: x.csv}}\n{body}\n")
    with pytest.raises(DeclarationError, match=message.replace(".", r"\.")):
        load_declarations([tmp_path])


@pytest.mark.slow
def test_bundled_sources_load_exactly(local_settings: Settings) -> None:
    decls = load_declarations()
    expected = {"flights": 336_776, "weather": 26_115, "planes": 3_322, "airlines": 16, "airports": 1_458}
    for name, rows in expected.items():
        result = ingest(decls[name], local_settings)
        assert (result.rows_in, result.rows_loaded, result.rows_quarantined) == (rows, rows, 0), name
    catalog = open_catalog(local_settings)
    flights = catalog.load_table("raw.flights").scan().to_arrow()
    assert flights.num_rows == 336_776
    assert flights.column("dep_time").null_count == 8_255  # cancelled flights are valid rows
    assert set(flights.column("_source_checksum").unique().to_pylist()) == {result_checksum(decls["flights"])}
    status = {s.name: s for s in lake_status(catalog, local_settings)}
    assert status["raw.flights"].rows == 336_776
    assert status["raw.flights"].partitions == 13  # 12 months + the first UTC hours of 2014-01
    assert status["raw.weather"].snapshots == 1


def result_checksum(decl: SourceDeclaration) -> str:
    from ingestion.landing import sha256_of

    return sha256_of(decl.input_files()[0])


@pytest.mark.slow
def test_loading_a_month_ten_times_changes_nothing(any_settings: Settings) -> None:
    decl = load_declarations()["weather"]
    catalog = open_catalog(any_settings)
    ingest(decl, any_settings)  # the whole table first: the other months must survive
    checksums, counts = set(), set()
    for _ in range(10):
        result = ingest(decl, any_settings, partition="2013-03")
        table = catalog.load_table("raw.weather")
        checksums.add(lake_fingerprint(table))
        counts.add(table.scan().count())
        assert result.rows_loaded == 2_230
    assert counts == {26_115}
    assert len(checksums) == 1
    table = catalog.load_table("raw.weather")
    assert len(table.snapshots()) == 11  # one snapshot per load
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    assert summary is not None
    assert summary["lab.partition"] == "2013-03"
    assert summary["lab.source-checksums"] == result_checksum(decl)
    assert summary["lab.source-files"].endswith("/weather.csv")
    # Partitions are UTC months of time_hour (local March 31 evening is April in UTC).
    march = table.scan(
        row_filter="time_hour >= '2013-03-01T00:00:00+00:00' and time_hour < '2013-04-01T00:00:00+00:00'"
    ).to_arrow()
    assert march.num_rows == 2_230
    assert set(march.column("_load_id").to_pylist()) == {result.load_id}


def test_repeated_loads_leave_no_orphan_metadata_file(local_settings: Settings) -> None:
    """Every metadata file of the quarantine table is one of its versions (create-if-missing writes none)."""
    decl = load_declarations()["weather"]
    for _ in range(3):
        ingest(decl, local_settings, partition="2013-03")
    table = open_catalog(local_settings).load_table("raw.quarantine")
    versions = {Path(entry.metadata_file).name for entry in table.metadata.metadata_log}
    versions.add(Path(table.metadata_location).name)
    folder = Path(local_settings.warehouse_uri.removeprefix("file://")) / "raw" / "quarantine" / "metadata"
    assert {path.name for path in folder.glob("*.metadata.json")} == versions


def test_bad_rows_are_quarantined_with_reasons(any_settings: Settings) -> None:
    rows = [
        *GOOD_ROWS,
        ["5", "click", "abc", "2024-01-05T00:00:00Z"],  # amount not a double
        ["6", "NA", "1", "2024-01-06T00:00:00Z"],  # required kind missing
        ["x7", "view", "1", "2024-01-07T00:00:00Z"],  # id not a long
        ["8", "view", "1", "yesterday"],  # unreadable partition time
    ]
    settings = any_settings.model_copy(update={"max_bad_row_share": 0.6})
    decl = events_source(settings, rows)
    result = ingest(decl, settings)
    assert (result.rows_in, result.rows_loaded, result.rows_quarantined) == (8, 4, 4)
    catalog = open_catalog(settings)
    loaded = catalog.load_table("raw.events").scan().to_arrow()
    assert sorted(loaded.column("event_id").to_pylist()) == [1, 2, 3, 4]
    assert loaded.column("amount").null_count == 1  # NA is a null, not a bad value
    bad = {row["line"]: row for row in quarantined_rows(catalog, settings, "events").to_pylist()}
    assert sorted(bad) == [6, 7, 8, 9]
    assert bad[6]["reason"] == "'amount' is not a valid double: 'abc'"
    assert bad[6]["raw_text"] == "5,click,abc,2024-01-05T00:00:00Z"
    assert bad[7]["reason"] == "missing required field 'kind'"
    assert "'event_id' is not a valid long: 'x7'" in bad[8]["reason"]
    assert "'happened_at' is not a valid timestamp: 'yesterday'" in bad[9]["reason"]
    assert all(row["source_file"].endswith("/events.csv") for row in bad.values())

    # Loading again replaces the quarantine slice instead of adding to it.
    ingest(decl, settings)
    assert quarantined_rows(catalog, settings, "events").num_rows == 4


def test_too_many_bad_rows_fail_and_write_nothing(local_settings: Settings) -> None:
    decl = events_source(local_settings, GOOD_ROWS)
    ingest(decl, local_settings)
    catalog = open_catalog(local_settings)
    before = catalog.load_table("raw.events").current_snapshot()
    data_dir = Path(local_settings.warehouse_uri.removeprefix("file://")) / "raw" / "events" / "data"
    files_before = set(data_dir.rglob("*.parquet"))

    decl = events_source(local_settings, [*GOOD_ROWS, ["5", "click", "oops", "2024-01-05T00:00:00Z"]])
    with pytest.raises(BadRowsError, match=r"1 of 5 rows are bad \(20.0% > the 5.0% allowed.*'amount' is not a valid"):
        ingest(decl, local_settings)
    table = catalog.load_table("raw.events")
    assert table.current_snapshot() == before
    assert set(data_dir.rglob("*.parquet")) == files_before  # written files were cleaned up
    assert quarantined_rows(catalog, local_settings, "events").num_rows == 0


def test_new_source_column_evolves_the_schema(any_settings: Settings) -> None:
    decl = events_source(any_settings, GOOD_ROWS)
    ingest(decl, any_settings)
    drifted = [[*row, f"web-{i}"] for i, row in enumerate(GOOD_ROWS)]
    decl = events_source(any_settings, drifted, header=["event_id", "kind", "amount", "happened_at", "channel"])
    result = ingest(decl, any_settings)
    assert result.new_columns == ["channel"]
    table = open_catalog(any_settings).load_table("raw.events")
    assert "channel" in table.schema().column_names
    data = table.scan().to_arrow()
    assert sorted(data.column("channel").to_pylist()) == [f"web-{i}" for i in range(4)]


def test_missing_required_column_fails_before_writing(local_settings: Settings) -> None:
    decl = events_source(local_settings, GOOD_ROWS)
    ingest(decl, local_settings)
    catalog = open_catalog(local_settings)
    before = catalog.load_table("raw.events").metadata_location
    decl = events_source(
        local_settings, [r[:1] + r[2:] for r in GOOD_ROWS], header=["event_id", "amount", "happened_at"]
    )
    with pytest.raises(SchemaMismatchError, match="required column 'kind' missing"):
        ingest(decl, local_settings)
    assert catalog.load_table("raw.events").metadata_location == before


def test_landing_is_content_addressed(any_settings: Settings) -> None:
    decl = events_source(any_settings, GOOD_ROWS)
    first = ingest(decl, any_settings)
    second = ingest(decl, any_settings)
    assert first.files == second.files
    store = ObjectStore(any_settings.landing_uri, any_settings)
    assert store.exists(first.files[0].uri)
    assert f"/events/{first.files[0].sha256}/events.csv" in first.files[0].uri
    assert store.list_files("events") == [first.files[0].uri]


def test_partition_argument_is_checked(local_settings: Settings) -> None:
    decl = events_source(local_settings, GOOD_ROWS)
    with pytest.raises(LabError, match="not a month in the form YYYY-MM"):
        ingest(decl, local_settings, partition="2024-13")
    with pytest.raises(LabError, match="no rows in partition 2023-01"):
        ingest(decl, local_settings, partition="2023-01")


def test_upsert_replaces_rows_by_key(any_settings: Settings) -> None:
    folder = any_settings.sources_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    data = write_csv(
        any_settings.home.parent / "carriers.csv", ["code", "name"], [["AA", "American"], ["UA", "United"]]
    )
    (folder / "carriers.yml").write_text(
        f"name: carriers\ninput: {{path: {data}}}\nprimary_key: [code]\nmode: upsert\n"
        "columns: [{name: code, required: true}, {name: name}]\n"
    )
    decl = load_declarations(any_settings.sources_dirs)["carriers"]
    ingest(decl, any_settings)
    write_csv(data, ["code", "name"], [["UA", "United Airlines"], ["DL", "Delta"]])
    ingest(decl, any_settings)
    rows = open_catalog(any_settings).load_table("raw.carriers").scan().to_arrow().sort_by("code")
    assert rows.column("code").to_pylist() == ["AA", "DL", "UA"]
    assert rows.column("name").to_pylist() == ["American", "Delta", "United Airlines"]
    assert pc.count_distinct(rows.column("_source_checksum")).as_py() == 2


def _events_rows(count: int) -> pa.Table:
    """Rows over three months in no particular order, with nulls and a NaN."""
    rng = random.Random(7)
    stamps = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=rng.randrange(24 * 85)) for _ in range(count)]
    amounts = [None if i % 11 == 0 else float("nan") if i == 5 else rng.uniform(-50, 50) for i in range(count)]
    return pa.table(
        {
            "event_id": pa.array(range(count), pa.int64()),
            "kind": pa.array([rng.choice(["click", "view", "buy", None]) for _ in range(count)], pa.large_string()),
            "amount": pa.array(amounts, pa.float64()),
            "happened_at": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "sales channel": pa.array([f"web-{i % 3}" for i in range(count)], pa.large_string()),
        }
    )


def _files_by_month(table: Table) -> dict[int, list[DataFile]]:
    files: dict[int, list[DataFile]] = {}
    for data_file in data_files_in(table, None):
        files.setdefault(data_file.partition[0], []).append(data_file)
    return files


def _column_chunks(parquet: pq.ParquetFile) -> list[pq.ColumnChunkMetaData]:
    meta = parquet.metadata
    return [meta.row_group(g).column(c) for g in range(meta.num_row_groups) for c in range(meta.num_columns)]


def test_data_files_match_pyiceberg_writer(local_settings: Settings) -> None:
    """The loader's writer makes the files pyiceberg's own would: schema, partitions, statistics."""
    decl = events_source(local_settings, GOOD_ROWS)
    catalog = open_catalog(local_settings)
    rows = _events_rows(600)
    tables = {}
    for name in ("ours", "reference"):
        table = ensure_table(catalog, f"raw.events_{name}", decl)
        # A name Avro cannot hold: pyiceberg writes it sanitised into the Parquet schema.
        tables[name] = evolve_schema(table, ["sales channel"], "test")
    ours, reference = (catalog.load_table(f"raw.events_{n}") for n in tables)
    reference.append(project(rows, reference.schema().as_arrow()))

    writer = DataFileWriter(ours, target_rows=1_000)  # one file per month, like the reference
    for batch in rows.to_batches(max_chunksize=70):  # batches straddle months
        writer.add(pa.Table.from_batches([batch]))
    writer.flush()
    ours, _ = commit_with_retry(lambda: catalog.load_table("raw.events_ours"), lambda _t: ([], writer.files), {}, 0)

    mine, theirs = _files_by_month(ours), _files_by_month(reference)
    assert sorted(mine) == sorted(theirs) == [648, 649, 650]  # 2024-01 .. 2024-03
    for month, (data_file,) in mine.items():
        (expected,) = theirs[month]
        for attribute in (
            "record_count",
            "column_sizes",
            "value_counts",
            "null_value_counts",
            "nan_value_counts",
            "lower_bounds",
            "upper_bounds",
            "split_offsets",
            "spec_id",
        ):
            assert getattr(data_file, attribute) == getattr(expected, attribute), (month, attribute)
        path = data_file.file_path.removeprefix("file://")
        assert data_file.file_size_in_bytes == Path(path).stat().st_size
        mine_parquet, theirs_parquet = pq.ParquetFile(path), pq.ParquetFile(expected.file_path.removeprefix("file://"))
        assert mine_parquet.schema_arrow.equals(theirs_parquet.schema_arrow, check_metadata=True)  # field ids
        assert "sales_x20channel" in mine_parquet.schema_arrow.names
        layout = [(c.path_in_schema, c.compression, c.encodings) for c in _column_chunks(mine_parquet)]
        assert layout == [(c.path_in_schema, c.compression, c.encodings) for c in _column_chunks(theirs_parquet)]

    def read_back(table: Table) -> pa.Table:
        data = table.scan().to_arrow().sort_by("event_id")
        return data.set_column(2, "amount", data.column("amount").cast(pa.string()))  # NaN == NaN as text

    assert read_back(ours).equals(read_back(reference))
    assert ours.scan(row_filter="happened_at >= '2024-02-01T00:00:00+00:00'").count() == sum(
        f.record_count for m in (649, 650) for f in mine[m]
    )
    files = [f.file_path.removeprefix("file://") for fs in mine.values() for f in fs]
    count, ids = duckdb.sql(f"select count(*), sum(event_id) from read_parquet({files})").fetchone()  # type: ignore[misc]
    assert (count, ids) == (600, sum(range(600)))


def test_data_files_stay_small_and_in_their_month(local_settings: Settings) -> None:
    """Small targets give many files, each of one month, every row written exactly once."""
    decl = events_source(local_settings, GOOD_ROWS)
    table = ensure_table(open_catalog(local_settings), "raw.events", decl)
    rows = _events_rows(500)
    writer = DataFileWriter(table, target_rows=40)
    for batch in rows.to_batches(max_chunksize=33):
        writer.add(pa.Table.from_batches([batch]))
    writer.add(rows.slice(0, 0))
    writer.flush()
    assert sum(f.record_count for f in writer.files) == 500
    assert max(f.record_count for f in writer.files) <= 40 + 33
    for data_file in writer.files:
        data = pq.read_table(data_file.file_path.removeprefix("file://"))
        months = {(t.year - 1970) * 12 + t.month - 1 for t in data.column("happened_at").to_pylist()}
        assert months == {data_file.partition[0]}
    ids = pa.concat_tables(pq.read_table(f.file_path.removeprefix("file://")) for f in writer.files)
    assert sorted(ids.column("event_id").to_pylist()) == list(range(500))


def test_discard_removes_files_still_being_written(local_settings: Settings) -> None:
    """An abandoned load waits for the writer threads, then leaves no data file behind."""
    decl = events_source(local_settings, GOOD_ROWS)
    table = ensure_table(open_catalog(local_settings), "raw.events", decl)
    writer = DataFileWriter(table, target_rows=25)
    for batch in _events_rows(400).to_batches(max_chunksize=50):
        writer.add(pa.Table.from_batches([batch]))  # files are being written meanwhile
    writer.discard()
    data_dir = Path(local_settings.warehouse_uri.removeprefix("file://")) / "raw" / "events" / "data"
    assert not list(data_dir.rglob("*.parquet"))
