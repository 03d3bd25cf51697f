"""Run dbt against the configured target, with ``profiles.yml`` fed from settings.

dbt runs as a child process: dbt-duckdb keeps its DuckDB connection open for the
life of the process, which would lock the caller out of the warehouse file it
wants to read right after the build. The LAB_* variables ``profiles.yml`` reads
are passed from the one settings object, so the CLI, the tests and Airflow all
build the same way.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import DbtError, LabError
from core.settings import Settings
from warehouse.connection import s3_secret_env

log = logging.getLogger(__name__)


@dataclass
class DbtResult:
    """What a dbt invocation did, node by node."""

    success: bool
    statuses: dict[str, str]  # unique_id -> status
    output: str = ""  # dbt's console output

    def count(self, resource: str, status: str | None = None) -> int:
        return sum(
            1
            for uid, st in self.statuses.items()
            if uid.split(".", 1)[0] == resource and (status is None or st == status)
        )


def dbt_env(settings: Settings) -> dict[str, str]:
    """The environment a dbt process needs: the LAB_* variables ``profiles.yml`` reads, and dbt's own switches."""
    return {
        "LAB_DBT_TARGET": settings.dbt_target,
        "LAB_DUCKDB_PATH": str(settings.duckdb_path),
        "LAB_DUCKDB_EXTENSION_DIRECTORY": str(settings.duckdb_extension_directory),
        "LAB_PG_HOST": settings.pg_host,
        "LAB_PG_PORT": str(settings.pg_port),
        "LAB_PG_USER": settings.pg_user,
        "LAB_PG_PASSWORD": settings.pg_password.get_secret_value(),
        "LAB_PG_DATABASE": settings.pg_database,
        "LAB_PG_SCHEMA": settings.pg_schema,
        "LAB_PREDICTION_HORIZON_MINUTES": str(settings.prediction_horizon_minutes),
        "LAB_LATE_DEPARTURE_MINUTES": str(settings.late_departure_minutes),
        "LAB_MONITOR_PSI_WARN": str(settings.monitor_psi_warn),
        "LAB_MONITOR_PSI_ALERT": str(settings.monitor_psi_alert),
        "LAB_MONITOR_DISTANCE_ALERT": str(settings.monitor_distance_alert),
        "LAB_MONITOR_MIN_LABELLED": str(settings.monitor_min_labelled),
        "LAB_MONITOR_MIN_PREDICTIONS": str(settings.monitor_min_predictions),
        "LAB_MONITOR_DRIFT_IMPORTANCE_SHARE": str(settings.monitor_drift_importance_share),
        **s3_secret_env(settings),  # the lake's S3 secret, for the raw views' iceberg_scan()s
        "DBT_PROFILES_DIR": str(settings.dbt_project_dir),
        "DBT_PROJECT_DIR": str(settings.dbt_project_dir),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }


def run_dbt(settings: Settings, args: Sequence[str], *, month: str | None = None, check: bool = True) -> DbtResult:
    """Invoke ``dbt <args>`` on ``settings.dbt_target``; ``month`` ('YYYY-MM') makes it a monthly incremental run.

    Raises:
        DbtError: when ``check`` and any node errored or failed.
    """
    project = str(settings.dbt_project_dir)
    full = [
        *args,
        *("--project-dir", project, "--profiles-dir", project, "--target", settings.dbt_target),
        # Artifacts and logs live with the rest of the state, per home and outside the repo.
        *("--target-path", str(target_dir(settings)), "--log-path", str(settings.home / "dbt" / "logs")),
    ]
    log.info("dbt %s", " ".join(full))
    # `dbt source freshness` reports in sources.json, every other command in run_results.json.
    results_file = target_dir(settings) / ("sources.json" if args[0] == "source" else "run_results.json")
    results_file.unlink(missing_ok=True)
    dbt = Path(sys.executable).with_name("dbt")
    proc = subprocess.run(
        [str(dbt), *full],
        # The month travels as LAB_DBT_MONTH, not --vars: see dbt_project/macros/month_filter.sql.
        # Always set, so a value left in the caller's environment never narrows a full run.
        env={**os.environ, **dbt_env(settings), "LAB_DBT_MONTH": month or ""},
        capture_output=True,
        text=True,
        check=False,
    )
    log.debug("%s", proc.stdout)
    statuses: dict[str, str] = {}
    if results_file.exists():
        for res in json.loads(results_file.read_text())["results"]:
            statuses[res["unique_id"]] = res["status"]
    result = DbtResult(success=proc.returncode == 0, statuses=statuses, output=proc.stdout + proc.stderr)
    if check and not result.success:
        failed = [uid for uid, st in statuses.items() if st in {"error", "fail", "runtime error"}]
        detail = f": {', '.join(failed[:5])}" if failed else f": {_first_error(result.output)}"
        raise DbtError(f"dbt {args[0]} failed on target {settings.dbt_target}{detail}")
    return result


def _first_error(output: str) -> str:
    """The line that names what went wrong in dbt's console output."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "Error in" in line or line.startswith(("Compilation Error", "Parsing Error", "Runtime Error")):
            return " ".join(lines[i : i + 2])
    return lines[-1] if lines else "no output"


def target_dir(settings: Settings) -> Path:
    """dbt's artifacts (manifest, run results, docs) for this home and target."""
    return settings.home / "dbt" / settings.dbt_target


def manifest_path(settings: Settings) -> Path:
    return target_dir(settings) / "manifest.json"


def model_relations(settings: Settings, folder: str | None = None) -> dict[str, str]:
    """Model name -> ``schema.alias`` of every built model (or those under ``models/<folder>``)."""
    path = manifest_path(settings)
    if not path.exists():
        raise LabError(f"no dbt manifest for target {settings.dbt_target}; run `lab build` first")
    manifest = json.loads(path.read_text())
    return {
        node["name"]: f"{node['schema']}.{node['alias']}"
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model" and (folder is None or folder in node["fqn"])
    }


def mart_relations(settings: Settings) -> dict[str, str]:
    """Model name -> ``schema.alias`` of every model under ``models/marts``."""
    return model_relations(settings, "marts")


def ensure_manifest(settings: Settings) -> Path:
    """The manifest Cosmos renders the DAG from; ``dbt parse`` writes it if missing.

    Parsing needs no warehouse connection, so this works on a fresh home.
    """
    path = manifest_path(settings)
    if not path.exists():
        run_dbt(settings, ["parse"])
    return path
