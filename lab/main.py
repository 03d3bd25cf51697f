"""``lab``, the one command line in front of every job of the platform: the app and its one error handler.

Exit codes: 0 success; 1 an unexpected failure (a bug: traceback shown);
2 a problem with the input or configuration (one line, no traceback);
3 a data-quality gate refused the data (one line, nothing written).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Annotated, ParamSpec

import typer
from pydantic import ValidationError

from core.errors import BadRowsError, LabError
from lab import output
from lab.commands import airflow, build, doctor, lake, models, monitoring, serve, stack, stream
from lab.context import LabContext

EXIT_USER_ERROR = 2
EXIT_QUALITY_GATE = 3

P = ParamSpec("P")


def with_exit_codes(command: Callable[P, None]) -> Callable[P, None]:
    """Run a command so that errors a user can fix become one red line and their exit code.

    Anything else is a bug: it propagates, and typer shows the traceback (exit 1).
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except BadRowsError as exc:
            output.error(str(exc))
            raise typer.Exit(EXIT_QUALITY_GATE) from None
        except LabError as exc:
            output.error(str(exc))
            raise typer.Exit(EXIT_USER_ERROR) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            output.error(f"configuration {where}: {first['msg']}")
            raise typer.Exit(EXIT_USER_ERROR) from None

    return run


app = typer.Typer(help="The data platform lab: land, model, train, serve.", no_args_is_help=True)
lake_app = typer.Typer(help="Inspect the Iceberg lake.", no_args_is_help=True)
stack_app = typer.Typer(help="The full stack (compose.yaml) as supervised processes here.", no_args_is_help=True)
stream_app = typer.Typer(help="The flight event stream (Redis Streams).", no_args_is_help=True)


@app.callback()
def callback(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens underneath.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = LabContext()


def _add(group: typer.Typer, name: str, command: Callable[..., None]) -> None:
    """Register a command, wrapped in :func:`with_exit_codes` (typer reads the wrapped signature and docstring)."""
    group.command(name)(with_exit_codes(command))


# In the order `lab --help` lists them.
_add(app, "sources", lake.sources_command)
_add(app, "ingest", lake.ingest_command)
_add(app, "build", build.build_command)
_add(app, "docs", build.docs_command)
_add(app, "tune", models.tune_command)
_add(app, "train", models.train_command)
_add(app, "promote", models.promote_command)
_add(app, "champion", models.champion_command)
_add(app, "reproduce", models.reproduce_command)
_add(app, "serve", serve.serve_command)
_add(app, "airflow", airflow.airflow_command)
_add(app, "airflow-test", airflow.airflow_test_command)
_add(app, "airflow-env", airflow.airflow_env_command)
_add(app, "api-demo", serve.api_demo_command)
_add(app, "replay", serve.replay_command)
_add(app, "monitor", monitoring.monitor_command)
_add(app, "doctor", doctor.doctor_command)
app.add_typer(lake_app, name="lake")
_add(lake_app, "status", lake.lake_status_command)
_add(lake_app, "quarantine", lake.lake_quarantine_command)
app.add_typer(stream_app, name="stream")
_add(stream_app, "sink", stream.sink_command)
_add(stream_app, "replay", stream.replay_command)
_add(stream_app, "check", stream.check_command)
_add(stream_app, "reset", stream.reset_command)
app.add_typer(stack_app, name="stack")
_add(stack_app, "up", stack.up_command)
_add(stack_app, "down", stack.down_command)
_add(stack_app, "status", stack.status_command)
_add(stack_app, "logs", stack.logs_command)
_add(stack_app, "run", stack.run_command)
_add(stack_app, "backfill", stack.backfill_command)
_add(stack_app, "exec", stack.exec_command)


def main() -> None:
    """The ``lab`` script: run the command, then end the process without the interpreter's teardown.

    After a command that loaded scikit-learn, pandas and MLflow, Python's
    finalisation frees every module's objects one by one, a share of
    ``lab train``'s wall time that ``bench/train.py`` (end to end) includes;
    the operating system reclaims the whole process at once. Everything a command owes is
    still done, in Python's own shutdown order: threads that are not daemons
    are joined (``threading._shutdown``, what finalisation calls first), then
    the ``atexit`` handlers run (logging flushed, MLflow's active run ended,
    temporary directories removed). A failure that escapes as an exception
    leaves the ordinary way, so its traceback prints as before.
    """
    try:
        app()
        code = 0
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            raise  # a message for Python to print, with exit code 1
        code = exc.code or 0
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
