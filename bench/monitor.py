"""Monitoring build time and peak memory: the half-year and one month, at x1 and x10 logged predictions.

Needs a home where ``make demo-monitoring`` has run (a champion trained on
January-June 2013, July-December replayed through the API, the log landed and
the references written). Its DuckDB warehouse is copied into a scratch folder
once per scale, and the copy's ``raw.predictions`` becomes a table holding the
landed log as is (x1) or every flight's prediction ten times under new
prediction ids, answered a second apart (x10: the same flights replayed again
and again). Then, each in a fresh child process:

- ``dbt build --select tag:monitoring --full-refresh``: every month from scratch;
- ``LAB_DBT_MONTH=<last month> dbt build --select tag:monitoring``: the incremental
  run a monthly schedule makes (as ``lab monitor --month`` runs it).

It prints wall seconds (and dbt's own time running the nodes), the peak resident memory of
dbt's process, and the x10/x1
ratio of each, against the goals (x10 half-year under 60 s, one month under 10 s).

Run: ``.venv/bin/python bench/monitor.py [--home .lab/demo-monitoring] [--scales 1,10]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOALS = {"half-year": 60.0, "one month": 10.0}


def _settings(home: Path):  # type: ignore[no-untyped-def]
    from core.settings import Settings

    return Settings(home=home, duckdb_path=home / "warehouse.duckdb", sources_dirs=[])


def prepare(source_home: Path, workdir: Path, scale: int) -> tuple[Path, int, str]:
    """A copy of the warehouse whose raw.predictions holds the log ``scale`` times; (home, rows, last month)."""
    from warehouse.connection import duckdb_connect

    home = workdir / f"x{scale}"
    home.mkdir(parents=True)
    shutil.copy(source_home / "warehouse.duckdb", home / "warehouse.duckdb")
    settings = _settings(home)
    with duckdb_connect(settings, settings.duckdb_path) as conn:
        conn.execute("load iceberg")
        conn.execute(
            "create table raw.predictions_bench as "
            "select * replace ("
            "  case when copy = 0 then prediction_id else prediction_id || '-' || copy end as prediction_id,"
            "  predicted_at + copy * interval '1 second' as predicted_at"
            f") from raw.predictions, range({scale}) as copies(copy)"
        )
        conn.execute("create or replace view raw.predictions as select * from raw.predictions_bench")
        rows = conn.execute("select count(*) from raw.predictions").fetchone()[0]  # type: ignore[index]
        # The last full month (the last UTC month holds only New Year's Eve's late departures).
        last = conn.execute(
            "select month from (select strftime(scheduled_departure_at at time zone 'UTC', '%Y-%m') as month, "
            "count(*) as n from raw.predictions group by 1) where n >= 1000 order by month desc limit 1"
        ).fetchone()[0]  # type: ignore[index]
    return home, int(rows), str(last)


def child(home: Path, args: list[str], month: str | None) -> None:
    """One dbt build, in this process's own child: prints its seconds and dbt's peak memory."""
    from warehouse.dbt import run_dbt, target_dir

    settings = _settings(home)
    started = time.perf_counter()
    run_dbt(settings, args, month=month)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # dbt's own account: the nodes' run, without its start (imports, project parse, adapter).
    nodes = json.loads((target_dir(settings) / "run_results.json").read_text())["elapsed_time"]
    print(json.dumps({"seconds": seconds, "peak_mib": peak_mib, "nodes": nodes}))


def measure(home: Path, args: list[str], month: str | None = None) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(home), json.dumps({"args": args, "month": month})],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".lab" / "demo-monitoring")
    parser.add_argument("--scales", default="1,10")
    parser.add_argument("--child", type=Path)
    parser.add_argument("dbt_args", nargs="?")
    options = parser.parse_args()
    if options.child:
        run = json.loads(options.dbt_args)
        child(options.child, run["args"], run["month"])
        return
    if not (options.home / "warehouse.duckdb").exists():
        raise SystemExit(f"no warehouse at {options.home}: run `make demo-monitoring` first")
    results: dict[int, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as scratch:
        for scale in (int(s) for s in options.scales.split(",")):
            home, rows, last = prepare(options.home, Path(scratch), scale)
            print(f"x{scale}: {rows:,} logged predictions; one month = {last}", flush=True)
            results[scale] = {
                "half-year": measure(home, ["build", "--select", "tag:monitoring", "--full-refresh"]),
                "one month": measure(home, ["build", "--select", "tag:monitoring"], month=last),
            }
            for run, figures in results[scale].items():
                print(
                    f"  {run:<10} {figures['seconds']:6.1f} s ({figures['nodes']:.1f} s running nodes)"
                    f"   peak {figures['peak_mib']:6.0f} MiB",
                    flush=True,
                )
    base = min(results)
    print(f"\n{'scale':<6}{'run':<11}{'seconds':>9}{'nodes s':>9}{'peak MiB':>10}{'vs x' + str(base):>9}{'goal':>8}")
    for scale, runs in results.items():
        for run, figures in runs.items():
            ratio = figures["seconds"] / results[base][run]["seconds"]
            goal = f"< {GOALS[run]:.0f} s" if scale == 10 else ""
            row = f"{figures['seconds']:9.1f}{figures['nodes']:9.1f}{figures['peak_mib']:10.0f}{ratio:9.2f}{goal:>8}"
            print(f"x{scale:<5}{run:<11}{row}")


if __name__ == "__main__":
    main()
