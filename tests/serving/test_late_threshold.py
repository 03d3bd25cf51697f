"""One late threshold: the setting the marts build their label with is the one the API describes."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from serving.app import create_app
from warehouse.dbt import dbt_env


def test_the_late_threshold_setting_reaches_dbt_and_the_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """LAB_LATE_DEPARTURE_MINUTES reaches every dbt run (`lab build` and the Cosmos tasks share ``dbt_env``)
    and the API's OpenAPI summary."""
    monkeypatch.setenv("LAB_LATE_DEPARTURE_MINUTES", "20")
    settings = Settings(home=tmp_path / ".lab")
    assert settings.late_departure_minutes == 20

    assert dbt_env(settings)["LAB_LATE_DEPARTURE_MINUTES"] == "20"
    summary = create_app(settings).openapi()["info"]["summary"]
    assert "more than 20 minutes late" in summary
    assert "15" not in summary
