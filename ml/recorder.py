"""A training run's MLflow record, written by a process of its own while the training process computes.

Why a second process: MLflow's import and the opening of its store, the
model's skops serialisation with MLflow's checks of it, and the plots are
seconds of single-threaded Python (``bench/train.py`` lists each stage).
The training process has work of its own in the same stretches (reading the
mart and the checksums; later the baseline and the bootstrap); two threads of
one interpreter would take turns on one lock, two processes use both cores.
So the recorder is started when training starts, imports MLflow and opens
the store while the mart is read, logs and registers the model and draws
the plots while the training process evaluates it, then logs what it is
sent and sets the ``challenger`` alias.

Its end of the conversation (``Recorder`` is the training process's):

1. the settings, at start;
2. a ``ModelToLog``, once the model is final: the run is created (with the
   training's start time) and the model and plots logged into it;
3. a ``RunRecord``: params, metrics, tags, datasets, the reference profile;
   the run ends FINISHED and the version becomes the challenger. It answers
   with a ``Recorded``, or with the traceback of what failed.

If the training process fails or disappears before step 3, the recorder
reads the end of the pipe, ends the run FAILED (no alias is set) and exits.
The messages are pickled over a socket pair between these two processes,
as ``multiprocessing`` does; no file and no other process is involved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING, Any

from core.names import CHALLENGER, TAG_MODEL_URI, TRAINING_MART
from core.settings import PROJECT_ROOT, Settings
from core.stopwatch import Stopwatch, as_metrics
from ml.artifacts import TRUSTED_TYPES

if TYPE_CHECKING:  # the training process starts the recorder before it imports these
    import numpy as np
    import pandas as pd

    from ml.importance import Importance

# How long the training process waits for the recorder to exit once it has answered, or been told to stop.
EXIT_SECONDS = 60


class RecorderFailed(RuntimeError):
    """The recorder could not record the run: what it raised, or how it exited."""


@dataclass
class ModelToLog:
    """Step 2: the final model and what its plots are drawn from."""

    run_name: str
    started_ms: int  # the training's start: the run's start time
    model: Any  # the fitted (maybe Platt-scaled) pipeline
    example: pd.DataFrame  # a few test rows: the input example
    example_proba: np.ndarray
    importance: Importance
    y_test: np.ndarray
    proba_test: np.ndarray
    uncalibrated_test: np.ndarray | None


@dataclass(frozen=True)
class Dataset:
    """One window as an MLflow dataset: identified by the checksum of its rows."""

    context: str  # train, validation or test
    name: str
    digest: str
    rows: int


@dataclass
class RunRecord:
    """Step 3: everything else the run records."""

    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    datasets: list[Dataset]
    schema_rows: pd.DataFrame  # a few rows of the features and the label: the datasets' schema
    profile: dict[str, Any]
    profile_artifact: str
    version_tags: dict[str, str]


@dataclass
class Recorded:
    """The recorder's answer."""

    run_id: str
    model_version: str
    model_uri: str
    seconds: dict[str, float] = field(default_factory=dict)  # the recorder's own stages


class Recorder:
    """The training process's end: ``with Recorder(settings) as recorder:``, then ``log_model``, ``finish``."""

    def __init__(self, settings: Settings, *, fork: bool = False) -> None:
        """Start the recorder: a new interpreter, or with ``fork`` a fork of this process (see ``_fork``)."""
        ours, theirs = Pipe()
        self._process = _fork(theirs, ours) if fork else _spawn(theirs)
        theirs.close()
        self._conn = ours
        self._conn.send(settings)
        self._run_started = False

    @property
    def pid(self) -> int:
        return self._process.pid

    def log_model(self, message: ModelToLog) -> None:
        self._send(message)
        self._run_started = True

    def finish(self, record: RunRecord) -> Recorded:
        """Send the rest; the recorder's answer once the run is logged and the version registered."""
        self._send(record)
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            raise self._failed("before answering") from None
        if kind == "error":
            raise _failure_in_recorder(value)
        return value

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        # Closing our end is the signal: a recorder still waiting for a message ends its run FAILED.
        # Before the model was sent there is no run yet: nothing to wait for.
        self._conn.close()
        if not self._run_started:
            self._process.terminate()
        try:
            self._process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _send(self, message: object) -> None:
        try:
            self._conn.send(message)
        except OSError:
            raise self._failed("while the run was being sent") from None

    def _failed(self, when: str) -> RecorderFailed:
        """What the recorder said before it went (its traceback), else how it exited."""
        try:
            if self._conn.poll():
                kind, value = self._conn.recv()
                if kind == "error":
                    return _failure_in_recorder(value)
        except (EOFError, OSError):
            pass
        try:
            code = self._process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            code = None
        return RecorderFailed(f"the MLflow recorder process (pid {self._process.pid}) exited {when}, with code {code}")


def _fork(theirs: Connection, ours: Connection) -> _Forked:
    """The recorder as a fork of this process: it starts with the modules this process imported.

    For callers that know their state: one thread, no database or store opened
    (``lab train``, before it reads the mart). A process with other threads or
    open connections (an Airflow worker, a test session) spawns instead: a lock
    another thread held, or a connection, would be copied into the child
    mid-use. OpenMP is the one library this process may have started: the
    recorder keeps it to one thread (``_record_one_run``). The child leaves
    through ``os._exit``, never back into this process's code.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:
        ours.close()
        code = _serve(theirs)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _spawn(theirs: Connection) -> subprocess.Popen[bytes]:
    """The recorder as a new interpreter (``python -m ml.recorder FD``), sharing nothing but the socket."""
    # It imports this project from where this process did: its root first on the path.
    path = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "ml.recorder", str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.DEVNULL,
    )


def _failure_in_recorder(trace: str) -> RecorderFailed:
    return RecorderFailed(f"recording the MLflow run failed in the recorder process:\n{trace}")


class _Forked:
    """A forked recorder's pid, waited for and signalled like a ``Popen``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"recorder {self.pid}", timeout or 0)
            else:
                time.sleep(0.01)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        if self.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, number)


# ---- the recorder process ----


def main(argv: list[str]) -> None:
    """``python -m ml.recorder FD``: record one run, talking over the socket ``FD``."""
    sys.exit(_serve(Connection(int(argv[0]))))


def _serve(conn: Connection) -> int:
    """Record one run; the exit code (0 also when the training process went first)."""
    try:
        settings = conn.recv()
        _record_one_run(conn, settings)
    except (EOFError, _TrainingGone):
        pass
    except Exception:
        with suppress(OSError):  # the training process may be gone too
            conn.send(("error", traceback.format_exc()))
        return 1
    return 0


class _TrainingGone(Exception):
    """The training process closed the pipe before the run was complete."""


def _receive(conn: Connection, kind: type) -> Any:
    try:
        message = conn.recv()
    except (EOFError, OSError):
        raise _TrainingGone from None
    if not isinstance(message, kind):
        raise TypeError(f"the recorder expected a {kind.__name__}, got {type(message).__name__}")
    return message


def _record_one_run(conn: Connection, settings: Settings) -> None:
    import mlflow
    from threadpoolctl import threadpool_limits

    from ml.tracking import use_experiment

    # One thread is all the recorder needs; and a fork of a process whose OpenMP pool
    # has run hangs in its first parallel region unless OpenMP keeps to one thread.
    threadpool_limits(limits=1, user_api="openmp")
    clock = Stopwatch()
    experiment_id = use_experiment(settings)
    _warm_what_logging_the_model_needs()
    clock.lap("recorder_start")

    model = _receive(conn, ModelToLog)
    clock.idle()
    run = mlflow.MlflowClient().create_run(experiment_id, start_time=model.started_ms, run_name=model.run_name)
    # A run left by an exception (the training process gone included) ends FAILED.
    with mlflow.start_run(run_id=run.info.run_id):
        info = _log_model(settings, model.model, model.example, model.example_proba)
        clock.lap("recorder_log_model")
        _log_plots(model.importance, model.y_test, model.proba_test, model.uncalibrated_test)
        clock.lap("recorder_plots")

        record = _receive(conn, RunRecord)
        clock.idle()
        mlflow.log_params(record.params)
        mlflow.set_tags({**record.tags, TAG_MODEL_URI: info.model_uri})
        _log_datasets(settings, record.datasets, record.schema_rows)
        mlflow.log_dict(record.profile, record.profile_artifact)
        clock.lap("recorder_log")
        mlflow.log_metrics({**record.metrics, **as_metrics(clock.seconds)})
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(settings.model_name, CHALLENGER, version)
    for key, value in record.version_tags.items():
        client.set_model_version_tag(settings.model_name, version, key, value)
    conn.send(("done", Recorded(run.info.run_id, version, info.model_uri, clock.seconds)))


def _warm_what_logging_the_model_needs() -> None:
    """What logging a model costs the first time only, paid while the training process reads and fits.

    The model's classes (to unpickle it), skops (whose import walks every
    scikit-learn estimator), MLflow's pyfunc (it loads the model back to check
    the input example), the plots' modules, and MLflow's map of installed
    packages, which it builds to check the model's requirements against this
    environment: checking the same requirements now builds it once.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import mlflow.pyfunc
    import mlflow.sklearn  # noqa: F401
    import sklearn.calibration
    import sklearn.ensemble
    import sklearn.metrics  # noqa: F401
    import skops.io  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(_requirements())


def _plots(
    importance: Importance,
    y_test: np.ndarray,
    proba_test: np.ndarray,
    uncalibrated_test: np.ndarray | None,
) -> dict[str, object]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    figures: dict[str, object] = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    RocCurveDisplay.from_predictions(y_test, proba_test, ax=ax, name="model")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_title("ROC (test window)")
    figures["roc_curve.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    PrecisionRecallDisplay.from_predictions(y_test, proba_test, ax=ax, name="model")
    ax.set_title("Precision-recall (test window)")
    figures["precision_recall.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 5))
    CalibrationDisplay.from_predictions(y_test, proba_test, n_bins=15, ax=ax, name="served")
    if uncalibrated_test is not None:
        CalibrationDisplay.from_predictions(y_test, uncalibrated_test, n_bins=15, ax=ax, name="before Platt scaling")
    ax.set_title("Calibration (test window)")
    figures["calibration.png"] = fig
    order = np.argsort(importance.values)
    fig, ax = plt.subplots(figsize=(6, max(3, 0.3 * len(order))))
    ax.barh(np.array(importance.names)[order], importance.values[order], xerr=importance.spread_of(order))
    ax.set_xlabel(importance.measure)
    ax.set_title(importance.title)
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures


def _log_plots(
    importance: Importance, y_test: np.ndarray, proba_test: np.ndarray, uncalibrated: np.ndarray | None
) -> None:
    import matplotlib.pyplot as plt
    import mlflow

    for name, figure in _plots(importance, y_test, proba_test, uncalibrated).items():
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)  # type: ignore[arg-type]


def _log_model(settings: Settings, pipeline: Any, example: pd.DataFrame, example_proba: np.ndarray) -> Any:
    """Log and register ``pipeline`` (skops) with its signature and input example; MLflow's ``ModelInfo``."""
    import mlflow
    from mlflow.models import infer_signature

    with _mlflow_checks_its_own_write():
        return mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, example_proba),
            input_example=example,
            registered_model_name=settings.model_name,
            pyfunc_predict_fn="predict_proba",
            # skops, never pickle: loading (ml/artifacts.py) trusts exactly these types.
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            # Named outright: inferring them makes MLflow shell out to uv and pip, for seconds.
            pip_requirements=_requirements(),
        )


def _log_datasets(settings: Settings, datasets: list[Dataset], schema_rows: pd.DataFrame) -> None:
    """One MLflow dataset per window, identified by its checksum; the schema from a few rows.

    MLflow's ``from_pandas`` profiles and type-checks every value of the frame
    it is given (seconds per window); the checksum identifies the rows exactly.
    """
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    schema = infer_signature(schema_rows).inputs
    for dataset in datasets:
        source = CodeDatasetSource(
            {"lab.training_mart": TRAINING_MART, "lab.dbt_target": settings.dbt_target, "lab.rows": str(dataset.rows)}
        )
        logged = MetaDataset(  # type: ignore[abstract]  # MLflow's own metadata-only dataset; profile is optional
            source, name=dataset.name, digest=dataset.digest, schema=schema
        )
        mlflow.log_input(logged, context=dataset.context)


@contextmanager
def _mlflow_checks_its_own_write() -> Iterator[None]:
    """Let MLflow load back, once, the model this process has just written.

    Logging a model with an input example makes MLflow load the saved model to
    check that the example scores; with its deserialisation off (as
    ``configure_mlflow`` leaves every lab process) that check fails with a
    warning. The bytes are the ones this process wrote a moment ago, not an
    artifact from the registry; every other load goes through ``ml.artifacts``.
    """
    key = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    before = os.environ.get(key)
    os.environ[key] = "true"
    try:
        yield
    finally:
        os.environ[key] = before if before is not None else "false"


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "pandas", "numpy", "scipy", "mlflow", "skops")]


if __name__ == "__main__":
    # Run through the importable module, not ``__main__``: the messages' classes must be ``ml.recorder``'s.
    from ml import recorder

    recorder.main(sys.argv[1:])
