"""The leaf package: the one checksum, month arithmetic, the retry policy, names that SQL must agree with."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pytest
import yaml
from pydantic import SecretStr

from core import retry
from core.checksum import checksum
from core.errors import LabError
from core.months import month_index, month_label
from core.names import CHAMPION, MODEL_NAME
from core.settings import PROJECT_ROOT, Settings
from core.uris import redact


def test_checksum_ignores_row_order_but_not_duplicates() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None], "c": [0.5, 1.5, None]})
    shuffled = frame.iloc[[2, 0, 1]]
    assert checksum(frame) == checksum(shuffled)
    doubled = pd.concat([frame, frame.iloc[[0]]])
    assert checksum(doubled) != checksum(frame)
    changed = frame.assign(b=["x", "y", "z"])
    assert checksum(changed) != checksum(frame)


def test_checksum_agrees_across_engines_types() -> None:
    """Int widths, time zones and the last float bits differ between DuckDB and Postgres reads; the rows do not."""
    when = pd.Timestamp("2013-01-01 05:15", tz="UTC")
    narrow = pa.table(
        {
            "n": pa.array([1, -2], pa.int32()),
            "x": pa.array([0.1 + 0.2, 1.0]),
            "t": pa.array([when, when], pa.timestamp("us", tz="UTC")),
        }
    )
    wide = pa.table(
        {
            "n": pa.array([1, -2], pa.int64()),
            "x": pa.array([0.3, 1.0]),
            "t": pa.array([when, when], pa.timestamp("us", tz="America/New_York")),
        }
    )
    assert checksum(narrow, float_digits=9) == checksum(wide, float_digits=9)
    assert checksum(narrow) != checksum(wide)  # unrounded, 0.1 + 0.2 is not 0.3


def test_checksum_can_leave_columns_out() -> None:
    a = pd.DataFrame({"k": [1, 2], "_load_id": ["one", "one"]})
    b = pd.DataFrame({"k": [2, 1], "_load_id": ["two", "two"]})
    assert checksum(a, exclude=["_load_id"]) == checksum(b, exclude=["_load_id"])
    assert checksum(a) != checksum(b)


def test_months_round_trip_and_refuse_malformed_input() -> None:
    assert month_index("1970-01") == 0
    assert month_index("2013-12") == 527
    for index in range(500, 530):
        assert month_index(month_label(index)) == index
    for bad in ("2013-13", "2013-1", "13-01", "2013/01", "soon"):
        with pytest.raises(LabError, match="YYYY-MM"):
            month_index(bad)


def test_retry_repeats_only_the_listed_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)

    def fails_twice() -> Callable[[int], int]:
        calls = itertools.count(1)

        def attempt(number: int) -> int:
            assert number == next(calls)
            if number < 3:
                raise TimeoutError("lost a race")
            return number

        return attempt

    assert retry.with_retries(fails_twice(), retries=5, retry_on=(TimeoutError,), what="test") == 3
    assert len(slept) == 2 and all(0 < s <= retry.MAX_DELAY * 1.5 for s in slept)

    with pytest.raises(TimeoutError):
        retry.with_retries(fails_twice(), retries=1, retry_on=(TimeoutError,), what="test")

    def broken(attempt: int) -> int:
        raise ValueError("not a race")

    with pytest.raises(ValueError):
        retry.with_retries(broken, retries=5, retry_on=(TimeoutError,), what="test")


def test_backoff_grows_and_is_capped() -> None:
    for attempt in range(1, 12):
        delay = retry.backoff_delay(attempt)
        base = min(retry.MAX_DELAY, retry.BASE_DELAY * 2**attempt)
        assert 0.5 * base <= delay <= 1.5 * base


def test_names_that_sql_and_python_share_agree() -> None:
    """The dbt project names the served model and its alias; Python writes them once, in core.names."""
    exposures = yaml.safe_load((PROJECT_ROOT / "dbt_project/models/marts/_exposures.yml").read_text())
    model = next(e for e in exposures["exposures"] if e["type"] == "ml")
    assert model["meta"] == {"registered_model": MODEL_NAME, "served_alias": CHAMPION}


def test_serving_looks_weather_back_as_far_as_dbt() -> None:
    from serving.features import WEATHER_LOOKBACK_HOURS

    project = yaml.safe_load((PROJECT_ROOT / "dbt_project/dbt_project.yml").read_text())
    assert project["vars"]["weather_lookback_hours"] == WEATHER_LOOKBACK_HOURS


@pytest.mark.parametrize("setting", ["prediction_horizon_minutes", "late_departure_minutes"])
def test_plain_dbt_and_the_settings_default_to_the_same_value(setting: str) -> None:
    """`lab` hands dbt the setting; a plain `dbt build` falls back to the project's default, the same one."""
    project = yaml.safe_load((PROJECT_ROOT / "dbt_project/dbt_project.yml").read_text())
    default = Settings.model_fields[setting].default
    assert project["vars"][setting] == f"{{{{ env_var('LAB_{setting.upper()}', '{default}') }}}}"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('Unable to connect at "postgresql://lab:s3cr%40t@db:5432/lab": refused', "s3cr%40t"),
        ("sqlalchemy: postgresql+psycopg2://ingest:hunter2@postgres/lab failed", "hunter2"),
        ("connection to 'host=db user=lab password=hunter2 dbname=lab' failed", "hunter2"),
        ("conninfo host=db password='two words' port=5432", "two words"),
    ],
)
def test_redact_removes_passwords_and_keeps_the_rest(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert "***" in redacted and ("db" in redacted or "postgres" in redacted)


def test_redact_leaves_urls_without_passwords_alone() -> None:
    text = "s3://lab/warehouse and http://mlflow:5000 and postgresql://postgres@127.0.0.1:5432/lab"
    assert redact(text) == text


@pytest.mark.parametrize("password", ["p@ss:w/rd?#%", "plain", "ünïcødé sp ace"])
def test_pg_url_survives_any_password(password: str) -> None:
    """libpq reads back exactly the password that was set: none of its characters changes the URL's meaning."""
    from psycopg.conninfo import conninfo_to_dict

    settings = Settings(home=PROJECT_ROOT / ".lab", pg_user="us@er", pg_password=SecretStr(password), pg_host="db")
    parsed = conninfo_to_dict(settings.pg_url())
    assert parsed["password"] == password and parsed["user"] == "us@er"
    assert parsed["host"] == "db" and parsed["dbname"] == settings.pg_database
