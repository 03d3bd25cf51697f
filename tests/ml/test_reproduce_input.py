"""`lab reproduce` takes a run id from the user and table names from the run's tags: both are checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import LabError
from core.settings import Settings
from ml.reproduce import _recorded_snapshots, reproduce


@pytest.mark.parametrize("run_id", ["../../etc", "0" * 31, "Z" * 32, "0" * 32 + "/x"])
def test_a_run_id_that_is_not_mlflows_is_refused_before_anything_is_touched(tmp_path: Path, run_id: str) -> None:
    settings = Settings(home=tmp_path / ".lab", sources_dirs=[])
    with pytest.raises(LabError, match="not an MLflow run id"):
        reproduce(settings, run_id)
    assert not (tmp_path / ".lab" / "reproduce").exists()


def test_snapshot_tags_must_name_lake_tables_and_ids() -> None:
    lake = {"flights", "weather"}
    assert _recorded_snapshots({"lab.snapshot.flights": "12", "other": "x"}, lake) == {"flights": 12}
    with pytest.raises(LabError, match="not a table of the lake"):
        _recorded_snapshots({'lab.snapshot.flights"; drop table raw.weather; --': "1"}, lake)
    with pytest.raises(LabError, match="not a snapshot id"):
        _recorded_snapshots({"lab.snapshot.weather": "1 or 1=1"}, lake)
    with pytest.raises(LabError, match="recorded no lake snapshots"):
        _recorded_snapshots({}, lake)
