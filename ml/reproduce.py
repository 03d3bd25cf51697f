"""Rebuild a past run's training set from the Iceberg snapshots it recorded.

Iceberg keeps every snapshot, so the raw tables can be read exactly as they were
when the run trained (time travel), however much was ingested since. They are
copied into a scratch DuckDB warehouse, the same dbt models are built there,
and every rebuilt window is checksummed (train, and validation and test, which
shaped the model too: early stopping, calibration) and the test window
re-scored, against what the run recorded.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from dataclasses import dataclass, field
from datetime import date

from core.checksum import checksum
from core.errors import LabError
from core.names import TAG_CHECKSUM_TRAIN, TAG_MODEL_URI, TAG_SNAPSHOT_PREFIX, TRAINING_MART
from core.settings import Settings
from ml.artifacts import load_model
from ml.data import LABEL, PARTS, read_mart, window
from ml.tracking import configure_mlflow
from ml.train import score

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Reproduction:
    """Recorded against rebuilt: each window's checksum and the test window's metrics."""

    run_id: str
    snapshots: dict[str, int]
    recorded_checksum: str  # the training window's
    rebuilt_checksum: str
    recorded_metrics: dict[str, float] = field(default_factory=dict)
    rebuilt_metrics: dict[str, float] = field(default_factory=dict)
    # The validation and test windows', by window ("" when the run recorded none).
    recorded_window_checksums: dict[str, str] = field(default_factory=dict)
    rebuilt_window_checksums: dict[str, str] = field(default_factory=dict)

    @property
    def matches(self) -> bool:
        same_metrics = all(
            abs(self.recorded_metrics[k] - self.rebuilt_metrics[k]) < 1e-9
            or (math.isnan(self.recorded_metrics[k]) and math.isnan(self.rebuilt_metrics[k]))
            for k in self.rebuilt_metrics
        )
        return (
            self.recorded_checksum == self.rebuilt_checksum
            and self.recorded_window_checksums == self.rebuilt_window_checksums
            and same_metrics
        )


def reproduce(settings: Settings, run_id: str) -> Reproduction:
    """Rebuild ``run_id``'s training set at its recorded snapshots and compare."""
    import mlflow

    from ingestion.storage import open_catalog
    from warehouse import snapshots
    from warehouse.connection import duckdb_connect
    from warehouse.dbt import run_dbt
    from warehouse.publish import never_loaded

    configure_mlflow(settings)
    client = mlflow.MlflowClient()
    # The id becomes a folder name below: only what MLflow itself issues (hex) is accepted.
    if not RUN_ID.fullmatch(run_id):
        raise LabError(f"{run_id!r} is not an MLflow run id (32 hexadecimal characters)")
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise LabError(f"no MLflow run {run_id!r} in {settings.mlflow_tracking_uri}") from exc
    tags = run.data.tags
    if TAG_CHECKSUM_TRAIN not in tags or TAG_MODEL_URI not in tags:
        raise LabError(f"run {run_id} recorded no lake snapshots; it was not made by `lab train`")
    if not tags[TAG_MODEL_URI].startswith("models:/"):
        raise LabError(f"run {run_id} names its model as {tags[TAG_MODEL_URI]!r}, not a models:/ URI")
    catalog = open_catalog(settings)
    recorded = _recorded_snapshots(tags, {ident[-1] for ident in catalog.list_tables(settings.raw_namespace)})

    scratch_home = settings.home / "reproduce" / run_id
    shutil.rmtree(scratch_home, ignore_errors=True)
    # The marts are rebuilt at the horizon the run trained at, whatever the current setting is.
    horizon = run.data.params.get("prediction_horizon_minutes", "")
    scratch = settings.model_copy(
        update={
            "home": scratch_home,
            "dbt_target": "duckdb",
            "duckdb_path": scratch_home / "warehouse.duckdb",
            **({"prediction_horizon_minutes": int(horizon)} if horizon.isdigit() else {}),
        }
    )
    with duckdb_connect(scratch, scratch.duckdb_path) as conn:
        conn.execute("create schema raw")
        for name, snapshot_id in sorted(recorded.items()):
            table = catalog.load_table(f"{settings.raw_namespace}.{name}")
            batches = table.scan(snapshot_id=snapshot_id).to_arrow_batch_reader()
            conn.register("batches", batches)
            conn.execute(f'create table raw."{name}" as select * from batches')
            conn.unregister("batches")
        # What the run's build had not loaded (the stream's events before the sink's first commit) it read empty.
        for name, empty in never_loaded(set(recorded)).items():
            conn.register("empty", empty)
            conn.execute(f'create table raw."{name}" as select * from empty')
            conn.unregister("empty")
        copied = [snapshots.PublishedTable(name, snapshot_id, "", 0) for name, snapshot_id in recorded.items()]
        snapshots.replace(conn.execute, conn.executemany, copied, "?")
    run_dbt(scratch, ["run", "--select", f"+{TRAINING_MART}"])
    frame = read_mart(scratch)

    params = run.data.params
    try:
        parts = {
            part: window(frame, date.fromisoformat(params[f"{part}_start"]), date.fromisoformat(params[f"{part}_end"]))
            for part in PARTS
        }
    except (KeyError, ValueError):
        raise LabError(f"run {run_id} records no train/validation/test windows; it predates them") from None
    test_part = parts["test"]
    features = [f for f in (params["categorical_features"] + "," + params["numeric_features"]).split(",") if f]
    model = load_model(tags[TAG_MODEL_URI]).pipeline
    rebuilt = score(model, test_part[features], test_part[LABEL].to_numpy(dtype=int))
    rebuilt = {f"test_{k}": v for k, v in rebuilt.items()}
    return Reproduction(
        run_id=run_id,
        snapshots=recorded,
        recorded_checksum=tags[TAG_CHECKSUM_TRAIN],
        rebuilt_checksum=checksum(parts["train"]),
        recorded_metrics={k: run.data.metrics[k] for k in rebuilt},
        rebuilt_metrics=rebuilt,
        recorded_window_checksums={part: tags.get(f"lab.checksum_{part}", "") for part in PARTS[1:]},
        rebuilt_window_checksums={part: checksum(parts[part]) for part in PARTS[1:]},
    )


def _recorded_snapshots(tags: dict[str, str], lake_tables: set[str]) -> dict[str, int]:
    """Raw table -> snapshot id from a run's tags, which anyone with access to the run could have edited.

    Only tables the lake really holds are accepted (their names then reach SQL),
    with integer snapshot ids.
    """
    recorded: dict[str, int] = {}
    for key, value in tags.items():
        if not key.startswith(TAG_SNAPSHOT_PREFIX):
            continue
        name = key.removeprefix(TAG_SNAPSHOT_PREFIX)
        if name not in lake_tables:
            raise LabError(f"the run records a snapshot of {name!r}, which is not a table of the lake")
        try:
            recorded[name] = int(value)
        except ValueError:
            raise LabError(f"the run records snapshot {value!r} of {name!r}, which is not a snapshot id") from None
    if not recorded:
        raise LabError("the run recorded no lake snapshots; it was not made by `lab train`")
    return recorded
