"""The full stack against the embedded default: one month's pipeline, and /predict throughput by API workers.

In one run on this machine:

- embedded: a fresh home, ``airflow dags test flights_monthly 2013-01-01`` (the
  embedded way to run a month: every task executed in one process, DuckDB);
- stack: a fresh ``lab stack up`` on its own home and database, then January to
  March backfilled through the scheduler on the Celery workers (Postgres, the S3
  stand-in). January's run is the one compared: both start from an empty lake.
  Each month is timed by Airflow's own run record (start to end);
- then, on the stack: train and promote, and ``lab serve`` as the stack's ``api``
  service (prediction log on Postgres) with 1 and then 2 worker processes, first
  beside Airflow's idle components and workers, then with them stopped (on a
  real deployment they run on other hosts; here they share the 2 cores), each
  sent the same real flights by a client in its own process: 16 connections,
  each one request at a time (``load``: raw HTTP, so the client is light). For
  each, the API's CPU time per answer and how busy the machine's cores were: a
  constant CPU per answer with the cores all busy means the API would scale
  with cores it does not have here.

Goals (issue 16): the stack's month within 1.5x of the embedded one; 2 API
workers at least 1.6x the throughput of 1. The stack is stopped and wiped after.

Run: ``.venv/bin/python bench/stack.py [--requests 4000]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.processes import free_port  # noqa: E402
from core.settings import Settings  # noqa: E402

LAB = str(Path(sys.executable).with_name("lab"))
CONNECTIONS = 16  # concurrent clients, each one request at a time


def embedded_month(workdir: Path) -> float:
    """Seconds of January's flights_monthly run, `airflow dags test` on a fresh embedded home."""
    from orchestration import airflow as af

    settings = Settings(home=workdir / "embedded", sources_dirs=[], airflow_port=free_port())  # type: ignore[arg-type]
    af.prepare(settings)
    af.dags_test(settings, "flights_monthly", "2013-01-01")
    runs = af.task_runs(settings, "flights_monthly")
    starts = [datetime.fromisoformat(r["start_date"]) for r in runs if r["start_date"]]
    ends = [datetime.fromisoformat(r["end_date"]) for r in runs if r["end_date"]]
    return (max(ends) - min(starts)).total_seconds()


def stack_months(env: dict[str, str]) -> dict[str, float]:
    """Seconds of each backfilled month's run on the stack, by Airflow's run records."""
    from stack import jobs
    from stack.runtime import Stack

    stack = Stack(Settings(home=Path(env["LAB_HOME"]), pg_database=env["LAB_PG_DATABASE"]))  # type: ignore[call-arg]
    jobs.start_backfill(stack, "flights_monthly", date(2013, 1, 1), date(2013, 3, 1))
    jobs.wait_for_backfill(stack, "flights_monthly", 3)
    rows = jobs.query(
        stack,
        "select run_id, extract(epoch from end_date - start_date) from dag_run "
        "where dag_id = 'flights_monthly' and run_type = 'backfill' order by run_id",
    )
    return {str(run)[len("backfill__") : len("backfill__") + 7]: float(str(seconds)) for run, seconds in rows}


@dataclass
class Rate:
    per_second: float  # answers per second
    api_cpu_ms: float  # CPU time of the API's processes per answer
    machine_busy: float  # share of the machine's cores in use during the run (all processes)


def throughput(env: dict[str, str], workers: int, flights: list[dict], requests: int) -> Rate:
    """Answers per second of `lab serve --workers N` as the stack's api service (``load``'s client)."""
    import httpx
    import psutil

    port = free_port()
    server = subprocess.Popen(
        [LAB, "stack", "run", "api", "--", LAB, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, ready_in_a_row = time.monotonic() + 120, 0
        while ready_in_a_row < 20:
            try:
                ready = httpx.get(f"{url}/ready", timeout=5).json()["status"] == "ready"
            except httpx.HTTPError:
                ready = False
            ready_in_a_row = ready_in_a_row + 1 if ready else 0
            if time.monotonic() > deadline:
                raise SystemExit(f"the API with {workers} worker(s) never became ready")
            time.sleep(0.05 if ready else 0.5)
        bodies = [{k: v for k, v in f.items() if k != "departure_delay_minutes"} for f in flights]
        api = psutil.Process(server.pid)

        def api_cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in [api, *api.children(recursive=True)])

        cpu_before, machine_before = api_cpu(), psutil.cpu_times()
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # the client in a process of its own
            sent, failures, seconds = pool.apply(load, (port, bodies, requests, CONNECTIONS))
        cpu_used, machine_after = api_cpu() - cpu_before, psutil.cpu_times()
        if failures:
            raise SystemExit(f"{len(failures)} requests failed: {sorted(set(failures))}")
        idle = machine_after.idle - machine_before.idle
        total = sum(machine_after) - sum(machine_before)
        return Rate(sent / seconds, 1000 * cpu_used / sent, 1 - idle / total)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def stop_airflow(stack: Any) -> None:
    """Stop Airflow's components and workers: on a real deployment they run on other hosts than the API."""
    from stack import supervisor

    rpc = supervisor.client(stack)
    for group in sorted({info["group"] for info in supervisor.processes(stack).values()}):
        if group.startswith("airflow-"):
            rpc.stopProcessGroup(group, True)


def load(port: int, bodies: list[dict], requests: int, connections: int) -> tuple[int, list[int], float]:
    """Send ``requests`` POST /predict over ``connections`` kept-alive connections; (sent, failed statuses, s).

    Raw HTTP/1.1 on asyncio streams with the requests encoded beforehand: a few
    tens of microseconds of client CPU per request, so the client takes little of
    the cores the API's workers are measured on (an httpx client took most of one).
    """
    import asyncio
    import json

    encoded = []
    for body in bodies:
        payload = json.dumps(body).encode()
        head = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        encoded.append(head.encode() + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    failures: list[int] = []

    async def connection(first: int, count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(first, first + count):
            writer.write(encoded[i % len(encoded)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            if status != 200:
                failures.append(status)
        writer.close()

    async def run() -> float:
        per = requests // connections
        started = time.perf_counter()
        await asyncio.gather(*(connection(n * per, per) for n in range(connections)))
        return time.perf_counter() - started

    seconds = asyncio.run(run())
    return requests // connections * connections, failures, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as scratch:
        workdir = Path(scratch)
        embedded = embedded_month(workdir)
        print(f"embedded: January's run {embedded:.1f} s", flush=True)

        base = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
        env = {**base, "LAB_HOME": str(workdir / "stack"), "LAB_PG_DATABASE": f"bench_{uuid.uuid4().hex[:8]}"}
        try:
            subprocess.run([LAB, "stack", "up"], env=env, check=True, capture_output=True)
            months = stack_months(env)
            print("stack: " + ", ".join(f"{m} {s:.1f} s" for m, s in months.items()), flush=True)
            windows = ["env", "LAB_VALIDATION_MONTHS=1", "LAB_TEST_MONTHS=1"]
            for step in ([*windows, LAB, "train"], [LAB, "promote"]):
                subprocess.run([LAB, "stack", "run", "lab", "--", *step], env=env, check=True, capture_output=True)
            from lab.traffic.examples import real_flight_requests
            from stack.runtime import Stack

            stack = Stack(Settings(home=Path(env["LAB_HOME"]), pg_database=env["LAB_PG_DATABASE"]))  # type: ignore[call-arg]
            flights = real_flight_requests(stack.pipeline_settings(), 500, "2013-03-15")
            rates = {(n, "airflow running"): throughput(env, n, flights, options.requests) for n in (1, 2)}
            stop_airflow(stack)
            rates |= {(n, "airflow stopped"): throughput(env, n, flights, options.requests) for n in (1, 2)}
        finally:
            subprocess.run([LAB, "stack", "down", "--volumes"], env=env, check=False, capture_output=True)

    january = months["2013-01"]
    print(f"\n{'':<44}{'value':>10}{'ratio':>8}{'goal':>9}")
    print(f"{'one month, embedded (dags test)':<44}{embedded:>9.1f}s{1.0:>8.2f}")
    print(f"{'one month, stack (scheduler)':<44}{january:>9.1f}s{january / embedded:>8.2f}{'<= 1.5':>9}")
    for beside in ("airflow running", "airflow stopped"):
        one, two = rates[(1, beside)], rates[(2, beside)]
        ratio = two.per_second / one.per_second
        print(f"{'/predict, 1 API worker, ' + beside:<44}{one.per_second:>8.0f}/s{1.0:>8.2f}")
        print(f"{'/predict, 2 API workers, ' + beside:<44}{two.per_second:>8.0f}/s{ratio:>8.2f}{'>= 1.6':>9}")
    print(f"\n{'/predict':<44}{'API CPU/answer':>15}{'machine busy':>14}")
    for (workers, beside), rate in rates.items():
        print(f"{f'{workers} worker(s), {beside}':<44}{rate.api_cpu_ms:>12.2f} ms{rate.machine_busy:>13.0%}")


if __name__ == "__main__":
    main()
