"""The warehouse connection fails with a clear error that never carries the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from core.errors import LabError
from core.processes import free_port
from core.settings import Settings
from warehouse.connection import pg_connection
from warehouse.query import query

PASSWORD = "sekret-Do-Not-Print"


@pytest.fixture
def unreachable(tmp_path: Path) -> Settings:
    """A Postgres warehouse on a port nothing listens on."""
    return Settings(home=tmp_path / ".lab", dbt_target="postgres", pg_port=free_port(), pg_password=SecretStr(PASSWORD))


def test_duckdb_attach_error_is_redacted(unreachable: Settings) -> None:
    with pytest.raises(LabError, match="Postgres warehouse is unavailable") as caught:
        query(unreachable, "select 1")
    assert PASSWORD not in str(caught.value)
    assert f":{unreachable.pg_port}" in str(caught.value)  # still says where it tried


def test_psycopg_error_is_redacted(unreachable: Settings) -> None:
    with pytest.raises(LabError, match="Postgres warehouse is unavailable") as caught, pg_connection(unreachable):
        pass
    assert PASSWORD not in str(caught.value)
