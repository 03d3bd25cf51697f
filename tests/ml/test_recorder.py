"""The recorder process (``ml.recorder``): a training run's MLflow record, written beside the training.

Its boundary is a second process: these tests fail the training after the
model was sent, kill the recorder, and run ``lab train`` itself, where the
recorder is a fork of the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from core.names import CHALLENGER
from core.settings import Settings
from ml import recorder
from ml import train as training
from ml.data import read_mart
from ml.tracking import configure_mlflow

if TYPE_CHECKING:
    from mlflow.entities import Run


@pytest.fixture
def own_store(duckdb_built: Settings, tmp_path: Path) -> Settings:
    """The session's marts, with an MLflow store of this test's own."""
    return duckdb_built.model_copy(
        update={"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "mlflow_artifact_uri": tmp_path.as_uri()}
    )


@pytest.fixture(scope="module")
def frame(duckdb_built: Settings) -> pd.DataFrame:
    return read_mart(duckdb_built)


def _children() -> set[int]:
    """This process's live children (``/proc``: a recorder left behind would be one)."""
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        pids |= {int(p) for p in (task / "children").read_text().split()}
    return pids


def _runs(settings: Settings) -> list[Run]:
    import mlflow

    configure_mlflow(settings)
    return mlflow.search_runs(experiment_names=[settings.mlflow_experiment], output_format="list")  # type: ignore[no-any-return]


def _challenger(settings: Settings) -> str | None:
    import mlflow
    from mlflow.exceptions import MlflowException

    configure_mlflow(settings)
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, CHALLENGER).version)
    except MlflowException:
        return None


@pytest.fixture
def no_recorder_left() -> Iterator[None]:
    before = _children()
    yield
    assert _children() <= before, "a recorder process outlived its training"


@pytest.mark.usefixtures("no_recorder_left")
def test_a_training_that_fails_after_sending_its_model_leaves_a_failed_run_and_no_challenger(
    own_store: Settings, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the bootstrap broke")

    monkeypatch.setattr(training, "bootstrap_metrics", broken)  # runs after the model went to the recorder
    with pytest.raises(RuntimeError, match="the bootstrap broke"):
        training.train(own_store, "baseline", frame)
    (run,) = _runs(own_store)
    assert run.info.status == "FAILED"
    assert _challenger(own_store) is None


@pytest.mark.usefixtures("no_recorder_left")
def test_a_killed_recorder_fails_the_training_with_a_clear_error(
    own_store: Settings, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish = recorder.Recorder.finish

    def killed_first(self: recorder.Recorder, record: recorder.RunRecord) -> recorder.Recorded:
        os.kill(self.pid, signal.SIGKILL)
        return finish(self, record)

    monkeypatch.setattr(recorder.Recorder, "finish", killed_first)
    with pytest.raises(recorder.RecorderFailed, match=r"recorder process \(pid \d+\) exited .* with code -9"):
        training.train(own_store, "baseline", frame)
    assert _challenger(own_store) is None


def test_lab_train_records_its_run_from_a_fork(own_store: Settings) -> None:
    # The command forks its recorder (ml.recorder._fork); train() elsewhere spawns one, as above.
    env = {
        **os.environ,
        "LAB_HOME": str(own_store.home),
        "LAB_SOURCES_DIRS": "[]",
        "LAB_DBT_TARGET": own_store.dbt_target,
        "LAB_MLFLOW_TRACKING_URI": own_store.mlflow_tracking_uri,
        "LAB_MLFLOW_ARTIFACT_URI": own_store.mlflow_artifact_uri,
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lab"), "train", "--model", "baseline"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run,) = _runs(own_store)
    assert run.info.status == "FINISHED"
    assert run.info.run_id in done.stdout
    assert {"seconds_fit", "seconds_recorder_log_model"} <= set(run.data.metrics)
    assert _challenger(own_store) == "1"
