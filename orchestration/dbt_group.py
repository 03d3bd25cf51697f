"""The dbt graph as Airflow tasks: one Cosmos task per model, running `dbt build` on it.

Choices, and why:

- ``LoadMode.DBT_MANIFEST``: the DAG is rendered from ``manifest.json``, so
  parsing a DAG file never starts dbt (a missing manifest is made once with
  ``dbt parse``).
- ``TestBehavior.BUILD``: each model's task builds the model *and* its tests in
  one dbt invocation, so a failing test fails the task of the model it guards
  and nothing downstream runs on bad data.
- ``InvocationMode.DBT_RUNNER``: dbt runs inside the task process, not as a
  subprocess per task (about 2.8x faster, DESIGN.md).
- DuckDB allows one writing process: every task that opens the warehouse file
  runs in the ``duckdb`` pool of one slot (``WAREHOUSE_POOL``), ML tasks too.
  On Postgres (many writers) `lab` gives the pool four slots.
- The run's month reaches the incremental models as the ``month`` var.
"""

from __future__ import annotations

from typing import Any

from lab.settings import Settings

WAREHOUSE_POOL = "duckdb"
MONTH = "{{ logical_date.strftime('%Y-%m') }}"  # the month a monthly run processes


def dbt_task_group(settings: Settings, group_id: str = "dbt", **kwargs: Any) -> Any:
    """A Cosmos ``DbtTaskGroup`` over the project, for the run's month."""
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    from transform.dbt import dbt_env, ensure_manifest

    env = dbt_env(settings)
    return DbtTaskGroup(
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
        execution_config=ExecutionConfig(execution_mode=ExecutionMode.LOCAL, invocation_mode=InvocationMode.DBT_RUNNER),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            # A relationships test reads two models: run it as its own task once
            # both exist, not inside the build of whichever model comes first.
            should_detach_multiple_parents_tests=True,
        ),
        operator_args={"vars": {"month": MONTH}, "pool": WAREHOUSE_POOL, "install_deps": False},
        **kwargs,
    )
