"""The dbt graph as Airflow tasks: one Cosmos task per model, for the run's month.

Two Cosmos execution modes, chosen by ``LAB_AIRFLOW_DBT_MODE`` and both measured
by ``bench/airflow.py``:

- ``watcher`` (default): one task, ``dbt_producer_watcher``, runs a single
  ``dbt build`` of the graph; every model has a ``<model>.run`` and a
  ``<model>.test`` task that report that model's result and its tests' from the
  build (``TestBehavior.AFTER_EACH``). dbt starts once, not once per model.
- ``local``: each model's task, ``<model>_model_build``, runs ``dbt build`` on
  its model and tests (``TestBehavior.BUILD``), so a failing test fails the task
  of the model it guards and nothing downstream runs on bad data.

Either way a failure turns one model's task red, and:

- ``LoadMode.DBT_MANIFEST``: the DAG is rendered from ``manifest.json``, so
  parsing a DAG file never starts dbt (a missing manifest is made once with
  ``dbt parse``).
- ``InvocationMode.DBT_RUNNER``: dbt runs inside the task process, not as a
  subprocess per task, which would start an interpreter and import dbt again.
- DuckDB allows one writing process: every task that opens the warehouse file
  runs in the ``duckdb`` pool of one slot (``WAREHOUSE_POOL``), ML tasks too.
  On Postgres (many writers) `lab` gives the pool four slots.
- The run's month reaches the incremental models as the ``month`` var.
- ``emit_datasets=False``: Cosmos would declare every model's table as an Airflow
  asset, a metadata write in every task. The DAGs hand over through one asset, the marts
  (``orchestration.assets``), and the dbt docs site holds the model lineage.
"""

from __future__ import annotations

from typing import Any

from core.names import WAREHOUSE_POOL
from core.settings import Settings

MONTH = "{{ logical_date.strftime('%Y-%m') }}"  # the month a monthly run processes


def model_task_id(settings: Settings, model: str, group_id: str = "dbt") -> str:
    """The task that shows one model's result, in the configured mode."""
    if settings.airflow_dbt_mode == "watcher":
        return f"{group_id}.{model}.run"
    return f"{group_id}.{model}_model_build"


def dbt_task_group(
    settings: Settings,
    group_id: str = "dbt",
    select: list[str] | None = None,
    month: str | None = MONTH,
    **kwargs: Any,
) -> Any:
    """A Cosmos ``DbtTaskGroup`` over the project (or the ``select``ed part of it), for the run's month.

    Without ``select`` it is the pipeline's graph: everything but the monitoring
    models, which the ``monitor`` DAG builds (``select=["tag:monitoring"]``) once
    predictions have landed. ``month=None`` builds every month (an asset-triggered
    run has no logical month).
    """
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    from warehouse.dbt import dbt_env, ensure_manifest

    env = dbt_env(settings)
    watcher = settings.airflow_dbt_mode == "watcher"
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            dbt_project_path=settings.dbt_project_dir,
            manifest_path=ensure_manifest(settings),
            project_name="lab",
            install_dbt_deps=False,
            env_vars=env,
        ),
        profile_config=ProfileConfig(
            profile_name="lab",
            target_name=settings.dbt_target,
            profiles_yml_filepath=settings.dbt_project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER if watcher else ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.DBT_RUNNER,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH if watcher else TestBehavior.BUILD,
            # Local mode: a relationships test reads two models, so it runs as its
            # own task once both exist, not inside the build of whichever model
            # comes first. Watcher mode: dbt orders it inside the one build, and
            # it is reported with its model's tests.
            should_detach_multiple_parents_tests=not watcher,
            emit_datasets=False,
            select=select or [],
            # Exposures (the model, the API) document consumers; nothing runs for them.
            exclude=["resource_type:exposure", *([] if select else ["tag:monitoring"])],
        ),
        operator_args={
            "vars": {"month": month} if month else {},
            "pool": WAREHOUSE_POOL,
            "install_deps": False,
            # Keep each invocation's run_results.json: publishing the online features checks them.
            "callback": "orchestration.steps.keep_dbt_results",
        },
        **kwargs,
    )
    if watcher:
        _report_after_build(group)
    return group


def _report_after_build(group: Any) -> None:
    """Watcher mode: the model tasks report the producer's one ``dbt build``, after it.

    Only the producer writes the warehouse, so only it takes the DuckDB pool.
    The model and test tasks read its results (XComs); made its downstream, they
    report right after the build instead of sleeping between polls beside it, and
    ``airflow dags test`` (one task at a time) never starts one that would wait
    for a producer that cannot run. ``all_done``: a model's task reports its own
    failure even when the build as a whole failed. No retries: Cosmos retries a
    watcher task by running dbt for that model itself, a second writer.
    """
    from airflow.sdk import TriggerRule
    from cosmos.constants import PRODUCER_WATCHER_DONE_TASK_ID, PRODUCER_WATCHER_TASK_ID

    tasks = {task.task_id: task for task in group.iter_tasks()}
    producer = tasks.pop(f"{group.group_id}.{PRODUCER_WATCHER_TASK_ID}")
    producer.retries = 0  # Cosmos skips a retried producer rather than build twice
    graph = group.dbt_graph
    # With no selection, a node outside the filtered graph was excluded (dbt drops its tests too);
    # with one, it was merely not selected (dbt still runs a test one selected model reads).
    excluded = set() if graph.render_config.select else set(graph.nodes) - set(graph.filtered_nodes)
    producer.tests_per_model = _one_owner_per_test(producer.tests_per_model, graph.filtered_nodes, excluded)
    tasks.pop(f"{group.group_id}.{PRODUCER_WATCHER_DONE_TASK_ID}", None)
    for task in tasks.values():
        task.pool = "default_pool"
        task.retries = 0
        if not task.upstream_task_ids & tasks.keys():
            producer >> task
            task.trigger_rule = TriggerRule.ALL_DONE


def _one_owner_per_test(
    tests_per_model: dict[str, list[str]], nodes: dict[str, Any], excluded: set[str]
) -> dict[str, list[str]]:
    """Report a test that reads several models with the one that builds last; drop tests dbt will not run.

    Cosmos files a test under every model it reads, and counts a test dbt
    skipped as failed. ``assert_features_precede_departure`` reads
    ``stg_nycflights__flights`` and ``training_flights``: when anything upstream
    of the mart fails, dbt skips the test and the *staging* model's test task
    would turn red, hiding the real failure downstream of it. Filed only under
    the model that depends on all the others (``training_flights``), it is
    reported where dbt runs it. A test between peers (two staging models) stays
    with both.
    """

    def ancestors(uid: str) -> set[str]:
        seen: set[str] = set()
        stack = list(nodes[uid].depends_on) if uid in nodes else []
        while stack:
            parent = stack.pop()
            if parent not in seen:
                seen.add(parent)
                stack.extend(nodes[parent].depends_on if parent in nodes else [])
        return seen

    # A test reading an excluded model (a monitoring model's relationships test on an
    # intermediate model, in the pipeline's build) is left out by dbt too: no result ever
    # comes for it, and its model's test task would defer to the triggerer to learn that.
    tests_per_model = {
        model: [test for test in tests if not set(getattr(nodes.get(test), "depends_on", ())) & excluded]
        for model, tests in tests_per_model.items()
    }
    models_of: dict[str, list[str]] = {}
    for model, tests in tests_per_model.items():
        for test in tests:
            models_of.setdefault(test, []).append(model)
    owned = {model: list(tests) for model, tests in tests_per_model.items()}
    for test, models in models_of.items():
        last = [m for m in models if set(models) - {m} <= ancestors(m)]
        if len(models) > 1 and len(last) == 1:
            for model in models:
                if model != last[0]:
                    owned[model].remove(test)
    return owned
