"""The duckdb target on an S3 lake against a folder lake: `lab ingest` and `lab build`, s3/local.

Prints, in one run, the seconds of each step of the real CLI (``.venv/bin/lab``
as a subprocess, configured by LAB_* variables only: the S3 secret travels in
the environment, never in argv) on two fresh homes with the same data:

- local: a folder lake (file://) and a SQLite catalog, the embedded default;
- s3: the lake on a SeaweedFS cluster started here (stack.seaweedfs.running,
  in a temporary folder), the catalog a SQLite file too, so the object store is
  the only difference.

Steps: ``lab ingest`` (every bundled source), then ``lab build`` (duckdb
target: publish the raw views, dbt build, freshness, online features). Goal:
s3/local <= 1.5x for each step.
Run: ``.venv/bin/python bench/s3.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAB = Path(sys.executable).with_name("lab")
STEPS = (("ingest", ["ingest"]), ("build", ["build"]))


def run_steps(env: dict[str, str]) -> dict[str, float]:
    """Seconds of each step, run by the real CLI under ``env``."""
    seconds = {}
    for name, args in STEPS:
        started = time.perf_counter()
        proc = subprocess.run([str(LAB), *args], env=env, capture_output=True, text=True, check=False)
        seconds[name] = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"lab {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return seconds


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    return {**env, "LAB_HOME": str(home), "LAB_DBT_TARGET": "duckdb"}


def main() -> None:
    from stack import seaweedfs

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local = run_steps(base_env(work / "local"))
        with seaweedfs.running(work / "seaweedfs") as cluster:
            secret = cluster.secrets[seaweedfs.secret_variable(seaweedfs.ADMIN)]
            bucket = "lab"  # created by running(); admin keys, as the tests use
            env = {
                **base_env(work / "s3"),
                "LAB_LANDING_URI": f"s3://{bucket}/landing",
                "LAB_WAREHOUSE_URI": f"s3://{bucket}/warehouse",
                "LAB_S3_ENDPOINT": cluster.endpoint,
                "LAB_S3_ACCESS_KEY_ID": seaweedfs.ADMIN,
                "LAB_S3_SECRET_ACCESS_KEY": secret,
            }
            s3 = run_steps(env)
    print(f"{'step':<8} {'local s':>9} {'s3 s':>9} {'s3/local':>9}")
    for name, _ in STEPS:
        print(f"{name:<8} {local[name]:>9.2f} {s3[name]:>9.2f} {s3[name] / local[name]:>8.2f}x")
    total_local, total_s3 = sum(local.values()), sum(s3.values())
    print(f"{'total':<8} {total_local:>9.2f} {total_s3:>9.2f} {total_s3 / total_local:>8.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
