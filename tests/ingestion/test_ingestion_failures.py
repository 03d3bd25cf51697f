"""Ingestion under failure: a killed loader and writers racing for the same table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pyiceberg.exceptions import CommitFailedException

import core.retry as retry
import ingestion.loader as loader
import ingestion.quarantine as quarantine
from core.settings import Settings
from ingestion.declarations import load_declarations
from ingestion.loader import ingest
from ingestion.status import quarantined_rows
from ingestion.storage import open_catalog
from tests.helpers.fingerprints import lake_fingerprint

# The child loads one month and, once its data files are written, stops right
# before the commit (announcing it through a marker file) so it can be killed there.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import ingestion.loader as loader
    from ingestion.declarations import load_declarations
    from core.settings import Settings

    marker = Path(sys.argv[2])
    real_commit = loader.commit_with_retry

    def stall(*args, **kwargs):
        marker.write_text("files written")
        time.sleep(600)
        return real_commit(*args, **kwargs)

    loader.commit_with_retry = stall
    loader.ingest(load_declarations()["weather"], Settings(home=Path(sys.argv[1])), partition="2013-03")
    """
)


def _parquet_files(settings: Settings) -> set[Path]:
    return set(Path(settings.warehouse_uri.removeprefix("file://")).rglob("*.parquet"))


@pytest.mark.slow
def test_sigkill_before_commit_leaves_previous_snapshot(local_settings: Settings, tmp_path: Path) -> None:
    decl = load_declarations()["weather"]
    ingest(decl, local_settings)
    catalog = open_catalog(local_settings)
    before = catalog.load_table("raw.weather")
    checksum_before = lake_fingerprint(before)
    files_before = _parquet_files(local_settings)

    marker = tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(local_settings.home), str(marker)])
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, "the loader exited before reaching the commit"
        assert time.monotonic() < deadline, "the loader never reached the commit"
        time.sleep(0.05)
    assert _parquet_files(local_settings) - files_before, "data files should exist before the commit"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    after = catalog.load_table("raw.weather")
    assert after.metadata_location == before.metadata_location
    assert after.current_snapshot() == before.current_snapshot()
    assert after.scan().count() == 26_115
    assert lake_fingerprint(after) == checksum_before

    result = ingest(decl, local_settings, partition="2013-03")  # the next run completes
    assert result.rows_loaded == 2_230
    final = catalog.load_table("raw.weather")
    assert len(final.snapshots()) == 2
    assert lake_fingerprint(final) == checksum_before


def test_concurrent_commit_is_retried(any_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer whose base snapshot went stale retries and keeps the other writer's data."""
    decl = load_declarations()["weather"]
    ingest(decl, any_settings, partition="2013-01")
    real = loader.data_files_in
    raced = {"done": False}

    def race_then_list(table, partitions):  # type: ignore[no-untyped-def]
        # The first time writer A prepares its commit, writer B commits another
        # month to the same table through its own catalog connection.
        if not raced["done"]:
            raced["done"] = True
            ingest(decl, any_settings, partition="2013-02")
        return real(table, partitions)

    monkeypatch.setattr(loader, "data_files_in", race_then_list)
    result = ingest(decl, any_settings, partition="2013-03")
    assert result.commit_attempts == 2
    table = open_catalog(any_settings).load_table("raw.weather")
    months = {s.summary["lab.partition"] for s in table.snapshots() if s.summary}  # type: ignore[index]
    assert months == {"2013-01", "2013-02", "2013-03"}
    assert len(table.snapshots()) == 3
    assert (
        table.scan(
            row_filter="time_hour >= '2013-01-01T00:00:00+00:00' and time_hour < '2013-04-01T00:00:00+00:00'"
        ).count()
        == table.scan().count()
    )
    assert table.scan().count() == sum(
        int(s.summary["lab.rows-loaded"])
        for s in table.snapshots()
        if s.summary  # type: ignore[index]
    )


def test_quarantine_commit_conflict_is_retried_with_backoff(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quarantine commit that loses a race is retried after the same jittered backoff as the data commit."""
    data = local_settings.home.parent / "events.csv"
    data.write_text("event_id,happened_at\n1,2024-01-03T10:00:00Z\nx2,2024-01-04T10:00:00Z\n")
    folder = local_settings.sources_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "events.yml").write_text(
        f"name: events\ninput: {{path: {data}}}\nprimary_key: [event_id]\npartition: {{column: happened_at}}\n"
        "mode: overwrite_partition\ncolumns: [{name: event_id, type: long, required: true},"
        " {name: happened_at, type: timestamp, required: true}]\n"
    )
    settings = local_settings.model_copy(update={"max_bad_row_share": 0.5})
    decl = load_declarations(settings.sources_dirs)["events"]

    real_commit, calls = quarantine.commit_slice, []

    def lose_the_first_race(table, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(table.name())
        if len(calls) == 1:
            raise CommitFailedException("another writer committed first")
        return real_commit(table, *args, **kwargs)

    real_delay, delays = retry.backoff_delay, []

    def recorded_delay(attempt: int) -> float:
        delays.append(real_delay(attempt))
        return delays[-1]

    monkeypatch.setattr(quarantine, "commit_slice", lose_the_first_race)
    monkeypatch.setattr(retry, "backoff_delay", recorded_delay)
    result = ingest(decl, settings)
    assert (result.rows_loaded, result.rows_quarantined) == (1, 1)
    assert calls == [("raw", "quarantine"), ("raw", "quarantine")]
    assert len(delays) == 1 and delays[0] > 0
    assert quarantined_rows(open_catalog(settings), settings, "events").column("line").to_pylist() == [3]
