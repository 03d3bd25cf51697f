"""Prediction serving: the lab API against `mlflow models serve` on the same model.

Prints, in one run on this machine:

- requests/s and p50/p99 latency of single-flight ``POST /predict`` on the lab
  API (feature lookup and prediction logging included) at concurrency 1 and 16;
- the same for ``mlflow models serve --env-manager local`` on the same model
  version, given the same feature rows the API assembled (``/invocations``);
- in-process feature lookup latency (``OnlineFeatures.assemble``), p50/p99;
- the API process's resident memory once it is ready (features and model
  loaded), and its peak while loading;
- in-process scoring of batches of 1 to 128 flights, p50 per call: the
  champion's trees compiled to arrays against scikit-learn's ``predict_proba``
  (where the API switches from one to the other).

Both servers run one worker process; the same Python client drives both, so its
own overhead is in both columns. Goals: >= 3x MLflow's throughput, p99 <= 5 ms
at concurrency 1, feature lookup p99 <= 1 ms.

Needs a lab home with built marts and a champion (``make demo`` makes one):
``.venv/bin/python bench/serve.py [--home .lab] [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from lab.traffic.examples import real_flight_requests  # noqa: E402
from serving.features import OnlineFeatures  # noqa: E402
from serving.process import api_server, free_port  # noqa: E402
from serving.schemas import FlightRequest  # noqa: E402


def sample_requests(settings: Settings, n: int) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in body.items() if k != "departure_delay_minutes"} for body in real_flight_requests(settings, n)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(url: str, bodies: list[dict[str, Any]], concurrency: int, total: int) -> dict[str, float]:
    """Drive ``total`` POSTs from ``concurrency`` threads; latency per request."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = total // concurrency

    def worker(index: int) -> None:
        mine = []
        with httpx.Client(timeout=30) as client:
            for i in range(per_worker):
                body = bodies[(index * per_worker + i) % len(bodies)]
                started = time.perf_counter()
                response = client.post(url, json=body)
                mine.append(time.perf_counter() - started)
                response.raise_for_status()
        with lock:
            latencies.extend(mine)

    with httpx.Client(timeout=60) as warm:  # connection set-up and first-call costs out of the figures
        for body in bodies[:20]:
            warm.post(url, json=body).raise_for_status()
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def resident_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MiB (Linux ``/proc``)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return tuple(int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def mlflow_server(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    mlflow = Path(sys.executable).with_name("mlflow")
    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH.
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "PATH": f"{mlflow.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # The baseline loads the model MLflow's way (the artifact's own format and
        # trusted types), which the lab turns off in its own processes.
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",
    }
    process = subprocess.Popen(
        [
            str(mlflow),
            "models",
            "serve",
            "-m",
            f"models:/{settings.model_name}@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise TimeoutError("mlflow models serve did not start")


def scoring_costs(settings: Settings, rows: list[dict[str, Any]], repeats: int = 30) -> None:
    """p50 ms per call of the compiled walk and of sklearn, for growing batches of real feature rows."""
    import pandas as pd

    from serving.model_store import ModelStore

    store = ModelStore(settings)
    served = store.load(store.champion_version())
    assert served.compiled is not None, "the champion has no compiled form"
    compiled = served.compiled

    def sklearn(batch: list[dict[str, Any]]) -> Any:
        frame = pd.DataFrame(batch, columns=served.features)
        frame[served.numeric] = frame[served.numeric].astype("float64")
        frame[served.categorical] = frame[served.categorical].astype("object")
        return served.model.predict_proba(frame)[:, 1]

    def walk(batch: list[dict[str, Any]]) -> Any:
        return compiled.predict_proba(compiled.encode(batch, served.categorical, served.numeric))

    print(
        f"\nscoring in process, p50 ms per call over {repeats} calls (API: compiled up to "
        f"{served.COMPILED_MAX_ROWS} rows)\n"
    )
    print(f"{'rows':>5} {'compiled':>9} {'sklearn':>9}")
    for size in (1, 8, 32, 128):
        batch = rows[:size]
        times = {}
        for name, score in (("compiled", walk), ("sklearn", sklearn)):
            score(batch)  # warm
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                score(batch)
                samples.append(time.perf_counter() - started)
            times[name] = statistics.median(samples) * 1e3
        print(f"{size:>5} {times['compiled']:>9.2f} {times['sklearn']:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=ROOT / ".lab")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    settings = Settings(home=args.home, sources_dirs=[])
    settings = settings.model_copy(
        update={"serve_poll_seconds": 0.0, "prediction_log_url": f"sqlite:///{args.home / 'bench-predictions.db'}"}
    )
    requests = sample_requests(settings, 500)

    # The exact feature rows the API builds, for MLflow's /invocations.
    from ml.tracking import configure_mlflow

    configure_mlflow(settings)
    features = OnlineFeatures.load(settings)
    import mlflow

    run = mlflow.MlflowClient().get_run(
        str(mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, "champion").run_id)
    )
    numeric = [c for c in run.data.params["numeric_features"].split(",") if c]
    columns = [c for c in run.data.params["categorical_features"].split(",") if c] + numeric
    invocations = []
    lookup_times = []
    feature_rows = []
    for body in requests:
        flight = FlightRequest.model_validate(body)
        started = time.perf_counter()
        row, _, _ = features.assemble(flight)
        lookup_times.append(time.perf_counter() - started)
        feature_rows.append(row)
        values = [float(row[c]) if c in numeric and row[c] is not None else row[c] for c in columns]
        invocations.append({"dataframe_split": {"columns": columns, "data": [values]}})
    for _ in range(20):  # steadier lookup percentiles
        for body in requests:
            flight = FlightRequest.model_validate(body)
            started = time.perf_counter()
            features.assemble(flight)
            lookup_times.append(time.perf_counter() - started)

    results: dict[str, dict[int, dict[str, float]]] = {"lab": {}, "mlflow": {}}
    with api_server(settings) as (url, api):
        rss, peak = resident_mib(api.pid)
        for concurrency in (1, 16):
            results["lab"][concurrency] = load(f"{url}/predict", requests, concurrency, args.requests)
    port = free_port()
    process = mlflow_server(settings, port)
    try:
        for concurrency in (1, 16):
            results["mlflow"][concurrency] = load(
                f"http://127.0.0.1:{port}/invocations", invocations, concurrency, args.requests
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    print(f"\nsingle-flight predictions, {args.requests} requests per run, one server worker each\n")
    print(f"{'server':<34} {'conc.':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for name, label in (("lab", "lab API /predict (lookup + log)"), ("mlflow", "mlflow models serve /invocations")):
        for concurrency, r in results[name].items():
            print(f"{label:<34} {concurrency:>5} {r['rps']:>8,.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f}")
    for concurrency in (1, 16):
        ratio = results["lab"][concurrency]["rps"] / results["mlflow"][concurrency]["rps"]
        print(f"throughput lab / mlflow at concurrency {concurrency}: {ratio:.2f}x (goal >= 3x)")
    print(
        f"feature lookup in process: p50 {statistics.median(lookup_times) * 1e6:.0f} us,"
        f" p99 {percentile(lookup_times, 0.99) * 1e6:.0f} us (goal p99 <= 1 ms)"
    )
    print(f"API resident memory once ready: {rss:.0f} MiB (peak while loading {peak:.0f} MiB)")
    scoring_costs(settings, feature_rows)


if __name__ == "__main__":
    main()
