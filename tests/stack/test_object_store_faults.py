"""The object store under failure: a volume server SIGKILLed, the S3 gateway killed in the middle of an ingest.

Each test has a SeaweedFS cluster of its own (a kill must not reach the
session's), the stack's topology and identities: the lake is written and read
as the pipeline, the job that runs ingest in the stack, never as the admin.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.settings import Settings
from ingestion.declarations import SourceDeclaration, load_declarations
from ingestion.loader import ingest
from ingestion.storage import open_catalog
from stack import seaweedfs
from tests.helpers.fingerprints import lake_fingerprint

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[seaweedfs.Cluster]:
    with seaweedfs.running(tmp_path / "seaweedfs") as cluster:
        yield cluster


@pytest.fixture
def lake(tmp_path: Path, cluster: seaweedfs.Cluster, pg_database: str) -> Settings:
    """The stack's lake layout on this cluster, with the pipeline's keys."""
    return Settings(
        home=tmp_path / ".lab",
        landing_uri="s3://lab/landing",
        warehouse_uri="s3://lab/warehouse",
        features_uri="s3://lab/features",
        catalog_uri=pg_database.replace("postgresql://", "postgresql+psycopg2://", 1),
        s3_endpoint=cluster.endpoint,
        s3_access_key_id="pipeline",
        s3_secret_access_key=SecretStr(cluster.secrets[seaweedfs.secret_variable("pipeline")]),
    )


def _load(settings: Settings, month: str) -> None:
    """`lab ingest --partition month`: that month of flights and weather, every keyed source whole."""
    for decl in _sources():
        ingest(decl, settings, partition=month if decl.partition else None)


def _sources() -> list[SourceDeclaration]:
    return [d for d in load_declarations().values() if d.name != "predictions"]


def _every_table(settings: Settings) -> dict[str, tuple[int, str]]:
    """Each raw table: its rows, read whole, and their fingerprint."""
    catalog = open_catalog(settings)
    tables = {}
    for identifier in catalog.list_tables(settings.raw_namespace):
        table = catalog.load_table(identifier)
        tables[".".join(identifier)] = (table.scan().to_arrow().num_rows, lake_fingerprint(table))
    return tables


def _flights(settings: Settings) -> tuple[int, int]:
    """raw.flights: its rows and its distinct flights."""
    table = open_catalog(settings).load_table(f"{settings.raw_namespace}.flights")
    rows = table.scan().to_arrow()
    keys = rows.select(["year", "month", "day", "carrier", "flight", "origin"])
    distinct = len(set(zip(*(keys.column(i).to_pylist() for i in range(keys.num_columns)), strict=True)))
    return rows.num_rows, distinct


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, int]]:
    """raw.flights after January, and after February, loaded into a local folder lake: what S3 must hold."""
    local = Settings(home=tmp_path_factory.mktemp("reference") / ".lab")
    flights = load_declarations()["flights"]
    found = {}
    for month in ("2013-01", "2013-02"):
        ingest(flights, local, partition=month)
        found[month] = _flights(local)
    return found


def _copies_settle(cluster: seaweedfs.Cluster, timeout: float = 60) -> dict[int, int]:
    """Every volume's copies as the master sees them, once each is on two servers (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        copies = seaweedfs.copies(f"http://127.0.0.1:{cluster.ports.master}")
        if set(copies.values()) == {2} or time.monotonic() > deadline:
            return copies
        time.sleep(1)


def test_a_volume_server_killed_loses_nothing_and_ingest_goes_on(
    lake: Settings, cluster: seaweedfs.Cluster, reference: dict[str, tuple[int, int]]
) -> None:
    _load(lake, "2013-01")
    before = _every_table(lake)
    assert _flights(lake) == reference["2013-01"]
    assert set(_copies_settle(cluster).values()) == {2}  # every volume on two servers before the fault

    cluster.kill("volume-2")
    assert _every_table(lake) == before  # every row of every table, read from the copies left

    _load(lake, "2013-02")  # commits with a server gone: new volumes grow on the two alive
    assert _flights(lake) == reference["2013-02"]
    during = _every_table(lake)

    cluster.start("volume-2")
    assert set(_copies_settle(cluster).values()) == {2}, "a volume is short of a copy after the server came back"
    assert _every_table(lake) == during


# The child loads February and, once its data files are in the store, waits before the
# commit (announcing it through a marker file) until the parent has killed the gateway.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import ingestion.loader as loader
    from core.errors import LabError
    from core.settings import Settings
    from ingestion.declarations import load_declarations

    settings = Settings()  # the parent's lake, from LAB_* variables
    marker, go = Path(sys.argv[1]), Path(sys.argv[2])
    real_commit = loader.commit_with_retry

    def stall(*args, **kwargs):
        marker.write_text("files written")
        while not go.exists():
            time.sleep(0.1)
        return real_commit(*args, **kwargs)

    loader.commit_with_retry = stall
    try:
        loader.ingest(load_declarations()["flights"], settings, partition="2013-02")
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    """
)


def test_the_gateway_killed_mid_ingest_fails_clearly_and_the_rerun_is_exact(
    lake: Settings, cluster: seaweedfs.Cluster, tmp_path: Path, reference: dict[str, tuple[int, int]]
) -> None:
    flights = next(d for d in _sources() if d.name == "flights")
    ingest(flights, lake, partition="2013-01")
    table = open_catalog(lake).load_table(f"{lake.raw_namespace}.flights")
    snapshot, fingerprint = table.current_snapshot().snapshot_id, lake_fingerprint(table)  # type: ignore[union-attr]

    marker, go = tmp_path / "written", tmp_path / "go"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(marker), str(go)],
        env=_environment(lake),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None and time.monotonic() < deadline, "the ingest never reached its commit"
        time.sleep(0.1)
    cluster.kill("s3")
    go.write_text("go")
    _, stderr = child.communicate(timeout=300)

    assert child.returncode == 1, stderr[-2000:]
    assert "object store" in stderr and cluster.endpoint in stderr, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]

    cluster.start("s3")
    table = open_catalog(lake).load_table(f"{lake.raw_namespace}.flights")
    assert table.current_snapshot().snapshot_id == snapshot  # type: ignore[union-attr]
    assert lake_fingerprint(table) == fingerprint

    ingest(flights, lake, partition="2013-02")  # the same ingest again
    assert _flights(lake) == reference["2013-02"]


def _environment(lake: Settings) -> dict[str, str]:
    """The lake's settings as a job receives them: LAB_* variables (the secret too, never an argument)."""
    import os

    given = {
        "home": str(lake.home),
        "landing_uri": lake.landing_uri,
        "warehouse_uri": lake.warehouse_uri,
        "catalog_uri": lake.catalog_uri,
        "s3_endpoint": lake.s3_endpoint or "",
        "s3_access_key_id": lake.s3_access_key_id or "",
        "s3_secret_access_key": lake.s3_secret_access_key.get_secret_value() if lake.s3_secret_access_key else "",
    }
    kept = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    return {**kept, **{f"LAB_{name.upper()}": value for name, value in given.items()}}
