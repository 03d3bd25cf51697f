"""The API serves only what a green build published: a red build changes nothing served, a running one blocks nothing.

The build tests run the real `lab build` (a child process) on a warehouse of
their own, a copy of the session's over the session's lake and registry, while
a real API process (`lab serve`) answers and reloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from core.settings import Settings
from lab.traffic.examples import real_flight_requests
from ml.registry import promote
from serving.process import api_server
from warehouse.dbt import target_dir
from warehouse.online import NotPublished, current_version, publish_features
from warehouse.query import query

pytestmark = pytest.mark.slow

ADMIN = {"X-Admin-Token": "s3cret-token"}


@pytest.fixture(scope="module")
def scratch(trained, tmp_path_factory: pytest.TempPathFactory) -> Settings:  # type: ignore[no-untyped-def]
    """A home with its own copy of the session's warehouse and its features published; the champion promoted."""
    settings, result = trained
    promote(settings, result.model_version)
    home = tmp_path_factory.mktemp("scratch") / ".lab"
    target = home / "dbt" / "duckdb"
    target.mkdir(parents=True)
    assert settings.duckdb_path is not None
    shutil.copy(settings.duckdb_path, home / "warehouse.duckdb")
    for name in ("manifest.json", "build_results.json"):
        shutil.copy(target_dir(settings) / name, target / name)
    scratch = settings.model_copy(
        update={
            "home": home,
            "duckdb_path": home / "warehouse.duckdb",
            "prediction_log_url": f"sqlite:///{home / 'predictions.db'}",
            "serve_poll_seconds": 0.0,
            "admin_token": SecretStr(ADMIN["X-Admin-Token"]),
        }
    )
    publish_features(scratch, [target / "build_results.json"])
    return scratch


def _lab_build(settings: Settings, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lab", "build"],
        env={**os.environ, **settings.to_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _a_flight_from(settings: Settings, origin: str) -> dict[str, Any]:
    flights = real_flight_requests(settings, 200, "2013-06-14")
    flight = next(f for f in flights if f["origin"] == origin)
    return {k: v for k, v in flight.items() if k != "departure_delay_minutes"}


def _artifact_files(settings: Settings) -> dict[str, bytes]:
    root = settings.home / "features" / "duckdb"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class LockWatch(threading.Thread):
    """Samples, until stopped, which processes hold a lock on a file (``/proc/locks``) and which have it open."""

    _LOCK = re.compile(r"\b(READ|WRITE)\s+(\d+)\s+([0-9a-f]+:[0-9a-f]+:\d+)\s")

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(daemon=True)
        self.paths = {str(path), f"{path}.wal"}
        stat = path.stat()
        # The file as /proc/locks names it: device major:minor in hex, inode.
        self.file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
        self.pid = pid
        self.lockers: dict[int, set[str]] = {}  # pid -> lock kinds seen
        self.opened_by_pid: set[str] = set()  # what of the warehouse ``pid`` had open
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            for kind, pid, file_id in self._LOCK.findall(Path("/proc/locks").read_text()):
                if file_id == self.file_id:
                    self.lockers.setdefault(int(pid), set()).add(kind)
            fd_dir = Path(f"/proc/{self.pid}/fd")
            try:
                fds = os.listdir(fd_dir)
            except FileNotFoundError:
                return  # the API has stopped
            for fd in fds:
                try:
                    target = os.readlink(fd_dir / fd)
                except OSError:
                    continue  # closed meanwhile
                if target in self.paths:
                    self.opened_by_pid.add(target)
            self.samples += 1


def test_without_published_features_the_api_is_up_and_not_ready(scratch: Settings, tmp_path: Path) -> None:
    """Runs first: it publishes the session build's results, which vouch for the marts only before the builds below."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    settings = scratch.model_copy(update={"features_uri": (tmp_path / "features").as_uri()})
    flight = _a_flight_from(settings, "EWR")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["features_version"] is None
        refused = client.post("/predict", json=flight)
        assert refused.status_code == 503 and "run `lab build`" in refused.json()["detail"]
        reload = client.post("/admin/reload", headers=ADMIN)
        assert reload.status_code == 503 and "run `lab build`" in reload.json()["detail"]

        version = publish_features(settings, [target_dir(scratch) / "build_results.json"]).version
        reloaded = client.post("/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200 and reloaded.json()["features_version"] == version
        assert client.get("/ready").status_code == 200
        assert client.post("/predict", json=flight).status_code == 200


def test_a_failed_build_leaves_the_served_features_unchanged(scratch: Settings, tmp_path: Path) -> None:
    """A build whose test fails after its mart was rewritten: the API, reloaded or restarted, serves what it served."""
    project = tmp_path / "dbt_project"
    shutil.copytree(scratch.dbt_project_dir, project, ignore=shutil.ignore_patterns("logs", "target", "dbt_packages"))
    mart = project / "models" / "marts" / "online_airports.sql"
    mart.write_text(
        mart.read_text()
        + "\nunion all\nselect 'JFK' as airport_code, 'A second JFK' as airport_name,"
        + " 'Pacific/Auckland' as time_zone, true as is_in_registry\n"
    )  # a row its unique test catches, but only once the table holds it
    flight = _a_flight_from(scratch, "JFK")
    served = current_version(scratch)
    files = _artifact_files(scratch)

    with api_server(scratch) as (url, _), httpx.Client(base_url=url, timeout=300) as http:
        assert http.get("/ready").json()["features_version"] == served
        departure = http.post("/predict", json=flight).json()["scheduled_departure_utc"]
        build = _lab_build(scratch, LAB_DBT_PROJECT_DIR=str(project))
        output = build.communicate()[0]
        assert build.returncode != 0 and "unique_online_airports_airport_code" in output, output[-3000:]

        # The red build did rewrite the mart: the warehouse now holds the untested row.
        results = json.loads((target_dir(scratch) / "run_results.json").read_text())
        statuses = {r["unique_id"]: r["status"] for r in results["results"]}
        assert statuses["model.lab.online_airports"] == "success"
        assert "fail" in {s for uid, s in statuses.items() if "unique_online_airports" in uid}
        jfk = query(scratch, "select count(*) as n from online_airports where airport_code = 'JFK'")
        assert jfk.to_pylist()[0]["n"] == 2
        # Nothing was published, and publishing now is refused on the build's own results.
        assert current_version(scratch) == served and _artifact_files(scratch) == files
        with pytest.raises(NotPublished, match="did not pass"):
            publish_features(scratch)

        reloaded = http.post("/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200 and reloaded.json()["features_version"] == served
        answer = http.post("/predict", json=flight).json()
        assert answer["scheduled_departure_utc"] == departure  # JFK is still in New York

    # The next start of the API serves the same features too.
    with api_server(scratch) as (url, _), httpx.Client(base_url=url, timeout=300) as http:
        assert http.get("/ready").json()["features_version"] == served
        assert http.post("/predict", json=flight).json()["scheduled_departure_utc"] == departure


def test_the_api_reloads_while_a_build_holds_the_warehouse(scratch: Settings) -> None:
    """`lab build` writes the DuckDB file (exclusive lock) while the API reloads in a loop: nothing waits or fails."""
    flight = _a_flight_from(scratch, "JFK")
    before = current_version(scratch)
    with api_server(scratch) as (url, process), httpx.Client(base_url=url, timeout=300) as http:
        assert http.get("/ready").json()["features_version"] == before
        watch = LockWatch(scratch.duckdb_path, process.pid)  # type: ignore[arg-type]
        watch.start()
        build = _lab_build(scratch)
        reloads, predictions = [], []
        while build.poll() is None:
            reloads.append(http.post("/admin/reload", headers=ADMIN))
            predictions.append(http.post("/predict", json=flight))
        output = build.communicate()[0]
        final = http.post("/admin/reload", headers=ADMIN)
        watch.done.set()
        watch.join()
    assert build.returncode == 0, output[-3000:]
    after = current_version(scratch)
    assert after is not None and after != before  # the green build published a new version
    assert f"online features {after} published" in output
    assert len(reloads) >= 3 and all(r.status_code == 200 for r in reloads), [r.text for r in reloads]
    assert {r.json()["features_version"] for r in reloads} <= {before, after}
    assert all(p.status_code == 200 for p in predictions)
    assert final.status_code == 200 and final.json()["features_version"] == after
    # The build really held the file (a reader opening it would have been refused) ...
    assert any("WRITE" in kinds for pid, kinds in watch.lockers.items() if pid != process.pid), watch.lockers
    # ... and the API never opened it, let alone locked it.
    assert process.pid not in watch.lockers and not watch.opened_by_pid
    assert watch.samples > 100
