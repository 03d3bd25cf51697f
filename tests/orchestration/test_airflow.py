"""Airflow: the DAG files, a real `airflow dags test` of the pipeline, a real scheduled backfill.

Everything runs on the embedded default (SQLite metadata DB, DuckDB warehouse)
under temporary homes; Airflow is started here, never mocked.
"""

from __future__ import annotations

import stat

import pytest

from core.errors import LabError
from core.names import WAREHOUSE_POOL
from core.processes import free_port
from core.settings import Settings
from orchestration import airflow as af
from orchestration.dbt_group import model_task_id
from orchestration.steps import ingest_month
from tests.helpers.fingerprints import fingerprint, mart_fingerprints
from warehouse.dbt import mart_relations, model_relations
from warehouse.query import query

DAGS = ("flights_monthly", "train_and_promote", "land_predictions", "monitor")


def _home(tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: object) -> Settings:
    return Settings(
        home=tmp_path_factory.mktemp(name) / ".lab",
        sources_dirs=[],
        airflow_port=free_port(),
        **overrides,  # type: ignore[arg-type]
    )


def _dbt_models(settings: Settings) -> set[str]:
    from warehouse.dbt import ensure_manifest, model_relations

    ensure_manifest(settings)
    return set(model_relations(settings)) - set(model_relations(settings, "monitoring"))  # the monitor DAG's


@pytest.mark.parametrize("mode", ["watcher", "local"])
def test_dag_integrity(mode: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DAG file imports, has tags, retries and owners; dbt models are tasks; warehouse writers share one slot."""
    settings = _home(tmp_path_factory, "dagbag", airflow_dbt_mode=mode, late_departure_minutes=20)
    for key, value in af.env(settings).items():
        monkeypatch.setenv(key, value)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=settings.airflow_dags_folder)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(DAGS)
    for dag_id in DAGS:
        dag = bag.dags[dag_id]
        assert dag.tags, dag_id
        assert dag.max_active_runs == 1, dag_id
        assert dag.topological_sort() is not None  # raises on a cycle
        for task in dag.tasks:
            assert task.owner != "airflow", task.task_id
            if not (mode == "watcher" and task.task_id.startswith(("dbt.", "monitoring."))):
                assert task.retries >= 1, task.task_id  # watcher tasks: one build, never a second writer
    pipeline = bag.dags["flights_monthly"]
    models = _dbt_models(settings)
    ids = {t.task_id for t in pipeline.tasks}
    assert {model_task_id(settings, m) for m in models} <= ids
    writers = {"publish", "marts_refreshed"}
    if mode == "watcher":
        producer = pipeline.get_task("dbt.dbt_producer_watcher")
        assert {t.task_id for t in pipeline.tasks if t.task_id.endswith(".run")} == {
            model_task_id(settings, m) for m in models
        }
        for model in models:  # every model's task reports after the one build, never beside it
            assert producer.task_id in pipeline.get_task(model_task_id(settings, model)).get_flat_relative_ids(
                upstream=True
            )
        writers.add(producer.task_id)
    else:
        writers |= {t.task_id for t in pipeline.tasks if t.task_id.startswith("dbt.")}
        assert {t.task_id for t in pipeline.tasks if t.task_id.endswith("_model_build")} == {
            model_task_id(settings, m) for m in models
        }
    assert {t.task_id for t in pipeline.tasks if t.pool == WAREHOUSE_POOL} == writers
    # Every task that runs dbt has the settings' variables (the late threshold among them), as `lab build` does.
    dbt_runs = [pipeline.get_task(task_id) for task_id in writers if task_id.startswith("dbt.")]
    assert dbt_runs and all(task.env["LAB_LATE_DEPARTURE_MINUTES"] == "20" for task in dbt_runs)
    from orchestration.assets import MARTS

    training = bag.dags["train_and_promote"]
    assert training.timetable.asset_condition.objects == (MARTS,)  # the default retrain policy: monthly

    # The monitor DAG: its own Cosmos group of exactly the monitoring models, then the decision.
    from orchestration.assets import PREDICTIONS, RETRAIN_REQUEST

    monitor = bag.dags["monitor"]
    assert monitor.timetable.asset_condition.objects == (PREDICTIONS,)
    monitoring = set(model_relations(settings, "monitoring"))
    assert {model_task_id(settings, m, "monitoring") for m in monitoring} <= {t.task_id for t in monitor.tasks}
    assert [a.uri for a in monitor.get_task("request_retraining").outlets] == [RETRAIN_REQUEST.uri]
    assert "monitoring" not in {t.task_id.split(".")[0] for t in pipeline.tasks}
    if mode == "watcher":
        # The pipeline's build leaves out every test that reads a monitoring model (dbt excludes
        # it with the model), so no task waits for its result; the monitor's build runs it.
        waited = {test for tests in producer.tests_per_model.values() for test in tests}
        assert waited and not {test for test in waited for model in monitoring if model in test}
        monitor_producer = monitor.get_task("monitoring.dbt_producer_watcher")
        monitor_tests = {test for tests in monitor_producer.tests_per_model.values() for test in tests}
        assert any("relationships_mon_predictions_with_outcomes" in test for test in monitor_tests)

    # Under the on_alert policy, only a fired rule schedules training.
    monkeypatch.setenv("LAB_RETRAIN_POLICY", "on_alert")
    on_alert = DagBag(dag_folder=settings.airflow_dags_folder)
    assert on_alert.dags["train_and_promote"].timetable.asset_condition.objects == (RETRAIN_REQUEST,)


@pytest.mark.parametrize("component", ["scheduler", "celery", "api-server"])
def test_only_what_forks_tasks_starts_warm(component: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Airflow's start-up runs the local settings `lab` writes: the scheduler and a Celery worker import
    what tasks need, quietly; the API server does not."""
    import json
    import subprocess
    import sys

    from orchestration.warm_start import DAG_PARSING, TASKS

    settings = _home(tmp_path_factory, "warm")
    af.write_local_settings(settings)
    wanted = [*DAG_PARSING, *TASKS, "skops.io"]
    probe = (
        f"import sys; sys.argv = ['airflow', {component!r}]; import airflow.configuration, json; "
        f"print(json.dumps([m for m in {wanted!r} if m in sys.modules]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=af.env(settings), capture_output=True, text=True, check=True
    )
    imported = json.loads(proc.stdout.splitlines()[-1])
    if component in {"scheduler", "celery"}:
        assert imported == wanted
    else:  # Airflow itself may load Cosmos (a provider); the tasks' libraries stay out
        assert not set(imported) & {*TASKS, "skops.io"}, imported
    assert "DeprecatedImportWarning" not in proc.stderr  # skops' module scan stayed quiet


@pytest.fixture(scope="module")
def pipeline_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """January and February in the lake (as earlier runs left it); March through `airflow dags test`."""
    settings = _home(tmp_path_factory, "pipeline")
    for month in ("2013-01", "2013-02"):
        ingest_month(settings, month)
    af.prepare(settings)
    return settings


@pytest.mark.slow
def test_dags_test_runs_the_month_and_a_champion_follows(pipeline_home: Settings) -> None:
    settings = pipeline_home
    af.dags_test(settings, "flights_monthly", "2013-03-01")
    states = af.task_states(settings, "flights_monthly")
    for model in _dbt_models(settings):
        assert states.get(model_task_id(settings, model)) == "success", model
    assert set(states.values()) == {"success"}, states
    first = mart_fingerprints(settings)
    training = mart_relations(settings)["training_flights"]
    months = {
        row["flight_month"] for row in query(settings, f"select distinct flight_month from {training}").to_pylist()
    }
    assert months == {"2013-01", "2013-02", "2013-03"}

    # The run published the online features the API loads, from the marts it built.
    from warehouse.online import read_current
    from warehouse.snapshots import recorded

    published = read_current(settings)
    assert published.manifest["lake_snapshots"] == {k: str(v) for k, v in recorded(settings).items()}
    assert {name: fingerprint(table) for name, table in published.tables.items()} == {
        name: first[name] for name in published.tables
    }

    # The same month again, then the training DAG, in one Airflow process (as `lab airflow-test`
    # runs them): every step overwrites its month, so nothing changes but the published version.
    af.dags_test_in_turn(settings, [("flights_monthly", "2013-03-01"), ("train_and_promote", None)])
    assert mart_fingerprints(settings) == first
    assert read_current(settings).version != published.version  # a new build, a new version
    assert set(af.task_states(settings, "train_and_promote").values()) == {"success"}
    import mlflow

    from ml.tracking import configure_mlflow

    configure_mlflow(settings)
    champion = mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == "1"


@pytest.mark.slow
def test_backfill_of_three_months_equals_one_run(
    pipeline_home: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`airflow backfill create` Jan-Mar under a real scheduler = one run over Jan-Mar (pipeline_home).

    The backfill runs dbt in Cosmos's local mode (a dbt build per model task),
    pipeline_home in watcher mode (one build): the marts must agree all the same.
    """
    settings = _home(tmp_path_factory, "backfill", airflow_dbt_mode="local")
    with af.standalone(settings):
        # Only the marts are compared here.
        af.airflow(settings, "dags", "pause", "train_and_promote", retry_locked=True)
        af.airflow(settings, "dags", "unpause", "flights_monthly", retry_locked=True)
        af.backfill(settings, "flights_monthly", "2013-01-01", "2013-03-01")
        runs = af.wait_for_runs(settings, "flights_monthly", 3)
    assert sorted(r["logical_date"][:7] for r in runs) == ["2013-01", "2013-02", "2013-03"]
    assert mart_fingerprints(settings) == mart_fingerprints(pipeline_home)
    # The password Airflow generated is readable by its owner only.
    assert af.admin_password(settings)
    assert stat.S_IMODE(af.passwords_file(settings).stat().st_mode) == 0o600


@pytest.mark.slow
def test_a_write_that_loses_the_metadata_database_race_runs_again(pipeline_home: Settings) -> None:
    """SQLite answers "database is locked" to a CLI write that loses to the scheduler's; retry_locked runs it again.

    The race is made certain here: this test holds the write lock (BEGIN IMMEDIATE)
    and the CLI's busy timeout is cut to 1 s; the lock goes once the retry is logged.
    """
    import logging
    import sqlite3
    import threading

    db = pipeline_home.airflow_database_url.removeprefix("sqlite:///").split("?")[0]
    settings = pipeline_home.model_copy(update={"airflow_database_url": f"sqlite:///{db}?timeout=1"})
    retried = threading.Event()

    class Retried(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            retried.set()

    def hold_lock(until: threading.Event) -> None:
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("begin immediate")
        locked.set()
        until.wait(timeout=120)
        lock.execute("rollback")
        lock.close()

    # Without the retry the write fails, naming the lock.
    never, locked = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_lock, args=(never,))
    holder.start()
    locked.wait()
    try:
        with pytest.raises(LabError, match="database is locked"):
            af.airflow(settings, "dags", "unpause", "train_and_promote")
    finally:
        never.set()
        holder.join()

    # With it, the second attempt finds the lock gone.
    handler = Retried(logging.WARNING)
    logging.getLogger(af.__name__).addHandler(handler)
    locked = threading.Event()
    holder = threading.Thread(target=hold_lock, args=(retried,))
    holder.start()
    locked.wait()
    try:
        af.airflow(settings, "dags", "unpause", "train_and_promote", retry_locked=True)
    finally:
        retried.set()
        holder.join()
        logging.getLogger(af.__name__).removeHandler(handler)
    dags = af._json(af.airflow(settings, "dags", "list", "--output", "json"))
    assert {d["dag_id"]: str(d["is_paused"]) for d in dags}["train_and_promote"] == "False"
    af.airflow(settings, "dags", "pause", "train_and_promote")  # as the home was (paused at creation)


@pytest.mark.slow
def test_a_failing_test_turns_its_models_task_red(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Watcher mode: one dbt build, yet the failure shows on the model whose test failed; downstream never runs."""
    import shutil

    project = tmp_path_factory.mktemp("broken") / "dbt_project"
    shutil.copytree(
        Settings().dbt_project_dir, project, ignore=shutil.ignore_patterns("logs", "target", "dbt_packages")
    )
    (project / "tests" / "routes_are_never_fine.sql").write_text(
        "-- a singular test that always fails, on one model\nselect * from {{ ref('int_routes') }} limit 1\n"
    )
    settings = _home(tmp_path_factory, "broken-home", dbt_project_dir=project)
    ingest_month(settings, "2013-01")
    af.prepare(settings)
    # As `lab airflow-test` runs the DAGs: a failed month stops the run before the training DAG.
    with pytest.raises(LabError, match="flights_monthly@2013-01-01, train_and_promote"):
        af.dags_test_in_turn(settings, [("flights_monthly", "2013-01-01"), ("train_and_promote", None)])
    assert af.task_runs(settings, "train_and_promote") == []
    runs = af._json(af.airflow(settings, "dags", "list-runs", "flights_monthly", "--output", "json"))
    assert [run["state"] for run in runs] == ["failed"]
    states = af.task_states(settings, "flights_monthly")
    assert states["dbt.dbt_producer_watcher"] == "failed"
    assert states[model_task_id(settings, "int_routes")] == "success"  # the model built; its test failed
    assert states["dbt.int_routes.test"] == "failed"
    assert states[model_task_id(settings, "stg_nycflights__flights")] == "success"
    # Its tests too: the one that also reads training_flights (skipped by dbt) is reported with that mart.
    assert states["dbt.stg_nycflights__flights.test"] == "success"
    assert states[model_task_id(settings, "online_airports")] == "upstream_failed"  # downstream of int_routes
    assert states["marts_refreshed"] == "upstream_failed"
    # Nothing was published; and the build's own results, kept by the callback, would refuse it anyway.
    from orchestration.steps import publish_online_features
    from warehouse.online import NotPublished, current_version

    assert current_version(settings) is None
    with pytest.raises(NotPublished, match="routes_are_never_fine"):
        publish_online_features(settings, runs[0]["run_id"])
