"""The `lab` CLI as a user meets it: help, tables, one-line errors, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import get_settings
from lab.main import EXIT_QUALITY_GATE, EXIT_USER_ERROR, app

runner = CliRunner()


@pytest.fixture(autouse=True)
def lab_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAB_HOME", str(tmp_path / ".lab"))
    monkeypatch.setenv("LAB_SOURCES_DIRS", f'["{tmp_path / "sources"}"]')
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.mark.parametrize(
    "args",
    [[], ["ingest"], ["lake", "status"], ["lake", "quarantine"], ["sources"], ["replay"], ["monitor"], ["doctor"]]
    + [["stack", command] for command in ("up", "down", "status", "logs", "run", "backfill")],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_ingest_then_status() -> None:
    result = runner.invoke(app, ["ingest", "airlines", "airports"])
    assert result.exit_code == 0, result.output
    assert "raw.airlines" in result.output and "1,458" in result.output
    status = runner.invoke(app, ["lake", "status"])
    assert status.exit_code == 0
    assert "raw.airports" in status.output and "1,458" in status.output
    quarantine = runner.invoke(app, ["lake", "quarantine", "airlines"])
    assert quarantine.exit_code == 0
    assert "0 row(s) shown" in quarantine.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "nope"], "unknown source nope"),
        (["ingest", "weather", "--partition", "2013-1"], "not a month in the form YYYY-MM"),
        (["ingest", "planes", "--partition", "2013-01"], "--partition applies to partitioned sources only"),
        (["replay", "--from", "2013-13", "--to", "2013-12"], "--from '2013-13' is not a month (YYYY-MM)"),
        (["replay", "--from", "2013-12", "--to", "2013-07"], "--from 2013-12 is after --to 2013-07"),
        (["monitor", "--month", "2013-7"], "partition '2013-7' is not a month in the form YYYY-MM"),
        (["train", "--through", "July"], "partition 'July' is not a month in the form YYYY-MM"),
    ],
)
def test_user_mistakes_are_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_USER_ERROR
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_declaration_is_one_line(lab_home: Path) -> None:
    (lab_home / "sources").mkdir()
    (lab_home / "sources" / "x.yml").write_text("name: x\ninput: {path: x.csv}\ncolumns: [{name: a, type: money}]\n")
    result = runner.invoke(app, ["sources"])
    assert result.exit_code == EXIT_USER_ERROR
    assert "x.yml: columns.0.type" in result.output


def test_quality_gate_has_its_own_exit_code(lab_home: Path) -> None:
    (lab_home / "sources").mkdir()
    (lab_home / "bad.csv").write_text("id,n\n1,2\n2,x\n3,y\n")
    (lab_home / "sources" / "bad.yml").write_text(
        f"name: bad\ninput: {{path: {lab_home / 'bad.csv'}}}\nprimary_key: [id]\n"
        "columns: [{name: id, type: int, required: true}, {name: n, type: int}]\n"
    )
    result = runner.invoke(app, ["ingest", "bad"])
    assert result.exit_code == EXIT_QUALITY_GATE
    assert "2 of 3 rows are bad" in result.output


def test_promote_with_nothing_trained_says_what_to_run() -> None:
    result = runner.invoke(app, ["promote"])
    assert result.exit_code == EXIT_USER_ERROR
    assert "nothing to gate: no challenger of flight_delay: run `lab train` first" in result.output
    assert "Traceback" not in result.output


def test_doctor_names_the_service_that_is_down_and_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Postgres target where no server listens: that row fails with its fix, the rest still run, exit 1."""
    from core.processes import free_port

    monkeypatch.setenv("LAB_DBT_TARGET", "postgres")
    monkeypatch.setenv("LAB_PG_PORT", str(free_port()))
    monkeypatch.setenv("LAB_AIRFLOW_PORT", str(free_port()))
    monkeypatch.setenv("LAB_SERVE_PORT", str(free_port()))
    get_settings.cache_clear()
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 5}
    assert "FAIL" in rows["postgres"] and "fix LAB_PG_" in rows["postgres"]
    assert " ok " in rows["iceberg catalog"] and " ok " in rows["prediction log"]
    assert "FAIL" not in rows["airflow"]  # not running is no failure on a laptop (LAB_ENVIRONMENT=local)
