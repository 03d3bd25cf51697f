"""The prediction log under a SIGKILL, and what its durability costs the writer.

Prints, in one run on this machine:

- SIGKILL mid-burst: the real API (``lab serve`` on the champion of ``--home``)
  answers a burst of single-flight ``POST /predict`` from ``--concurrency``
  clients; after ``--kill-after`` 200s it is killed with SIGKILL. Then the
  200s are matched by prediction_id against the rows in the log database and
  the spool: ``lost`` is answered but in neither (the figure docs/serving.md's
  loss bound quotes), ``extra`` is logged but never answered (the request was
  cut off after its row was queued). ``backlog`` is what ``/ready`` reported
  just before the kill (rows in memory only). Once with the database up, once
  with it down (every row goes through the spool), ``--runs`` times each.
- the writer's throughput, in process: rows/s from ``record`` to durable, into
  SQLite, and into the spool (fsync per batch); and the latency of one spool
  append + fsync for batches of 1, 100 and 500 rows (the writer fsyncs once
  per batch, never per request).

Needs a lab home with built marts and a champion (``make demo`` makes one):
``.venv/bin/python bench/prediction_log.py [--home .lab] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from lab.traffic.examples import real_flight_requests  # noqa: E402
from serving.prediction_log import DATETIME_COLUMNS, PredictionLog, Spool, log_row  # noqa: E402
from serving.process import api_server  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spooled_ids(directory: Path) -> set[str]:
    ids = set()
    for path in directory.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):  # a line torn by the kill
                ids.add(json.loads(line)["prediction_id"])
    return ids


def logged_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("predictions"):
                return set()
            return set(conn.execute(sa.text("select prediction_id from predictions")).scalars())
    except sa.exc.OperationalError:
        return set()  # the database-down case: there is none
    finally:
        engine.dispose()


def kill_mid_burst(
    settings: Settings, bodies: list[dict[str, Any]], concurrency: int, kill_after: int
) -> dict[str, int]:
    """One burst, one SIGKILL: answered, logged, spooled, lost, extra, backlog."""
    answered: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def client(worker: int, url: str) -> None:
        with httpx.Client(timeout=30) as http:
            for i in range(10**9):
                try:
                    response = http.post(f"{url}/predict", json=bodies[(worker * 7919 + i) % len(bodies)])
                except httpx.HTTPError:
                    return  # killed
                if response.status_code == 200:
                    with lock:
                        answered.append(response.json()["prediction_id"])
                        if len(answered) >= kill_after:
                            enough.set()

    with api_server(settings) as (url, process):
        threads = [threading.Thread(target=client, args=(w, url), daemon=True) for w in range(concurrency)]
        for thread in threads:
            thread.start()
        if not enough.wait(300):
            raise RuntimeError("the burst did not reach --kill-after answers")
        backlog = httpx.get(f"{url}/ready", timeout=10).json()["log"]["backlog"]
        process.kill()
        process.wait()
        for thread in threads:
            thread.join(60)
    assert settings.prediction_log_spool_dir is not None
    spooled = spooled_ids(settings.prediction_log_spool_dir)
    logged = logged_ids(settings.prediction_log_url)
    kept = spooled | logged
    return {
        "answered": len(answered),
        "logged": len(logged),
        "spooled": len(spooled),
        "lost": len(set(answered) - kept),
        "extra": len(kept - set(answered)),
        "backlog": backlog,
    }


def _row(number: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    request = {"carrier": "UA", "flight": 1 + number % 9999, "tailnum": "N14228", "origin": "EWR", "dest": "IAH"}
    features = {f"feature_{i}": float(i) for i in range(30)}
    return log_row(str(uuid.uuid4()), now, "flight-delay", "1", request, now, features, [], 0.42, False)


def writer_throughput(workdir: Path, rows: int) -> dict[str, float]:
    """Rows/s from ``record`` until every row is durable: into SQLite, and into the spool (database down)."""
    out = {}
    blocker = workdir / "db-here"
    blocker.write_text("a file where the database's folder should be")
    for name, url in (
        ("sqlite", f"sqlite:///{workdir / 'throughput.db'}"),
        ("spool", f"sqlite:///{blocker / 'log.db'}"),
    ):
        spool_dir = workdir / f"spool-{name}"
        log = PredictionLog(url, spool_dir, max_pending=rows + 1, retries=0)
        batch = [_row(n) for n in range(rows)]
        if name == "spool":
            while log.health().status != "degraded":  # the writer has found the database down
                time.sleep(0.01)
        started = time.perf_counter()
        for row in batch:
            log.record([row])
        while log.health().backlog:
            time.sleep(0.001)
        out[name] = rows / (time.perf_counter() - started)
        log.close()
    return out


def spool_append_latency(workdir: Path, repeats: int) -> dict[int, tuple[float, float]]:
    """p50 and p99 ms of one append + fsync, per batch size."""
    spool = Spool(workdir / "spool-latency", max_bytes=1 << 34, datetime_columns=DATETIME_COLUMNS)
    out = {}
    for size in (1, 100, 500):
        rows = [_row(n) for n in range(size)]
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            spool.append(rows)
            samples.append(time.perf_counter() - started)
        out[size] = (statistics.median(samples) * 1e3, percentile(samples, 0.99) * 1e3)
    spool.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=ROOT / ".lab")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--kill-after", type=int, default=3000, help="200s before the SIGKILL")
    parser.add_argument("--throughput-rows", type=int, default=20_000)
    args = parser.parse_args()
    base = Settings(home=args.home, sources_dirs=[])
    bodies = [
        {k: v for k, v in body.items() if k != "departure_delay_minutes"} for body in real_flight_requests(base, 500)
    ]

    results: dict[str, list[dict[str, int]]] = {"database up": [], "database down": []}
    with tempfile.TemporaryDirectory(prefix="bench-log-") as tmp:
        workdir = Path(tmp)
        for run in range(args.runs):
            for case in results:
                folder = workdir / f"{case.replace(' ', '-')}-{run}"
                folder.mkdir()
                if case == "database up":
                    url = f"sqlite:///{folder / 'log.db'}"
                else:
                    (folder / "db-here").write_text("a file where the database's folder should be")
                    url = f"sqlite:///{folder / 'db-here' / 'log.db'}"
                settings = base.model_copy(
                    update={
                        "serve_poll_seconds": 0.0,
                        "prediction_log_url": url,
                        "prediction_log_spool_dir": folder / "spool",
                    }
                )
                results[case].append(kill_mid_burst(settings, bodies, args.concurrency, args.kill_after))
        throughput = writer_throughput(workdir, args.throughput_rows)
        latency = spool_append_latency(workdir, 200)

    print(
        f"\nSIGKILL after {args.kill_after} answers, {args.concurrency} clients, single-flight /predict;"
        f" {args.runs} runs per case\n"
    )
    header = ("case", "run", "answered", "logged", "spooled", "backlog", "lost", "extra")
    print(f"{header[0]:<14} {header[1]:>3} " + " ".join(f"{h:>8}" for h in header[2:]))
    for case, runs in results.items():
        for run, r in enumerate(runs):
            figures = " ".join(f"{r[h]:>8}" for h in header[2:])
            print(f"{case:<14} {run:>3} {figures}")
    worst = max(r["lost"] for runs in results.values() for r in runs)
    print(f"worst loss: {worst} answered rows (lost = answered, neither logged nor spooled)")
    print(f"\nwriter throughput, record -> durable, {args.throughput_rows} rows, in process\n")
    for name, rate in throughput.items():
        print(f"  into {name:<7} {rate:>10,.0f} rows/s")
    print("\nspool append + fsync, ms per append\n")
    print(f"{'rows':>5} {'p50':>7} {'p99':>7}")
    for size, (p50, p99) in latency.items():
        print(f"{size:>5} {p50:>7.2f} {p99:>7.2f}")


if __name__ == "__main__":
    main()
