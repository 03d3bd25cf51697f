"""The published online features: what a green build exports, what a red one cannot, what a reader checks."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pydantic import SecretStr

from core.settings import Settings
from serving.features import ONLINE_TABLES
from stack import seaweedfs
from tests.helpers.fingerprints import fingerprint
from warehouse.dbt import mart_relations, target_dir
from warehouse.online import (
    MANIFEST,
    POINTER,
    FeaturesUnavailable,
    NotPublished,
    current_version,
    features_root,
    publish_features,
    read_current,
)
from warehouse.query import query
from warehouse.snapshots import recorded

pytestmark = pytest.mark.slow

ONLINE_MARTS = {
    "online_airports",
    "online_flight_outcomes",
    "online_origin_weather",
    "online_plane_features",
    "online_routes",
}


def _build_results(settings: Settings) -> dict[str, Any]:
    # The session fixture kept the build's results (later dbt commands overwrite run_results.json).
    return json.loads((target_dir(settings) / "build_results.json").read_text())  # type: ignore[no-any-return]


def _results_file(tmp_path: Path, results: dict[str, Any], name: str = "run_results.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return path


def _another_build(settings: Settings, tmp_path: Path, n: int) -> Path:
    """The session build's results under another invocation id: a new green build of the same marts."""
    results = _build_results(settings)
    results["metadata"]["invocation_id"] = f"00000000-0000-0000-0000-{n:012d}"
    return _results_file(tmp_path, results, f"build-{n}.json")


def _local_root(settings: Settings) -> Path:
    return Path(urlparse(features_root(settings)).path)


def test_published_features_are_the_marts_of_the_green_build(duckdb_built: Settings) -> None:
    settings = duckdb_built
    published = read_current(settings)
    manifest = published.manifest
    assert set(published.tables) == ONLINE_MARTS  # every online_* mart; training_flights stays in the warehouse
    assert ONLINE_MARTS == ONLINE_TABLES  # ... and every table the API computes features from
    assert manifest["version"] == published.version == current_version(settings)
    assert manifest["dbt"] == {
        "target": "duckdb",
        "invocation_ids": [_build_results(settings)["metadata"]["invocation_id"]],
    }
    assert manifest["lake_snapshots"] == {name: str(snapshot) for name, snapshot in recorded(settings).items()}
    marts = mart_relations(settings)
    root = _local_root(settings)
    for name, table in published.tables.items():
        entry = manifest["tables"][name]
        in_warehouse = query(settings, f"select * from {marts[name]}")
        assert fingerprint(table) == fingerprint(in_warehouse), name
        assert table.schema == in_warehouse.schema, name  # same Arrow types the API used to read
        data = (root / published.version / entry["file"]).read_bytes()
        assert entry["rows"] == table.num_rows and entry["sha256"] == hashlib.sha256(data).hexdigest()
    pointer = json.loads((root / POINTER).read_text())
    manifest_bytes = (root / published.version / MANIFEST).read_bytes()
    assert pointer == {"version": published.version, "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()}
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no staging folder or pointer left over


def test_publishing_the_same_build_again_writes_nothing(duckdb_built: Settings) -> None:
    """An Airflow retry of the publishing task, or `lab build` printing twice: same version, same files."""
    before = sorted(p.name for p in _local_root(duckdb_built).rglob("*"))
    again = publish_features(duckdb_built, [target_dir(duckdb_built) / "build_results.json"])
    assert not again.written and again.version == current_version(duckdb_built)
    assert sorted(p.name for p in _local_root(duckdb_built).rglob("*")) == before


def _failed_test(results: dict[str, Any]) -> dict[str, Any]:
    test = next(r for r in results["results"] if r["unique_id"].startswith("test.lab.unique_online_airports"))
    test["status"] = "fail"
    return results


def _skipped_mart(results: dict[str, Any]) -> dict[str, Any]:
    next(r for r in results["results"] if r["unique_id"] == "model.lab.online_plane_features")["status"] = "skipped"
    return results


def _untested_mart(results: dict[str, Any]) -> dict[str, Any]:
    """A green `lab build --select training_flights+`-like run: the online marts' tests did not run."""
    results["results"] = [r for r in results["results"] if "online_origin_weather" not in r["unique_id"]]
    return results


def _not_a_build(results: dict[str, Any]) -> dict[str, Any]:
    results["args"]["which"] = "compile"
    return results


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_failed_test, "did not pass: test.lab.unique_online_airports"),
        (_skipped_mart, "did not pass: model.lab.online_plane_features (skipped)"),
        (_untested_mart, "did not build and test every online mart"),
        (_not_a_build, "results of `dbt compile`"),
    ],
)
def test_a_build_that_is_not_all_green_publishes_nothing(
    duckdb_built: Settings, tmp_path: Path, spoil: Any, message: str
) -> None:
    settings = duckdb_built.model_copy(update={"features_uri": (tmp_path / "features").as_uri()})
    first = publish_features(settings, [target_dir(settings) / "build_results.json"])
    results = spoil(_build_results(settings))
    results["metadata"]["invocation_id"] = "a-later-build"
    with pytest.raises(NotPublished, match=re.escape(message)):
        publish_features(settings, [_results_file(tmp_path, results)])
    assert current_version(settings) == first.version
    assert [p.name for p in _local_root(settings).iterdir() if not p.is_file()] == [first.version]


def test_no_results_at_all_publish_nothing(duckdb_built: Settings, tmp_path: Path) -> None:
    settings = duckdb_built.model_copy(update={"features_uri": (tmp_path / "features").as_uri()})
    with pytest.raises(NotPublished, match="no dbt results"):
        publish_features(settings, [tmp_path / "missing.json"])
    with pytest.raises(NotPublished, match="no dbt results"):
        publish_features(settings, [])
    assert current_version(settings) is None


def test_a_reader_gets_a_whole_verified_version_or_an_error(duckdb_built: Settings, tmp_path: Path) -> None:
    settings = duckdb_built.model_copy(update={"features_uri": (tmp_path / "features").as_uri()})
    with pytest.raises(FeaturesUnavailable, match=r"no online features are published .*; run `lab build`"):
        read_current(settings)
    publication = publish_features(settings, [target_dir(settings) / "build_results.json"])
    assert read_current(settings).version == publication.version
    folder = _local_root(settings) / publication.version

    outcomes = folder / "online_flight_outcomes.parquet"
    original = outcomes.read_bytes()
    outcomes.write_bytes(original[:-9] + bytes([original[-9] ^ 0xFF]) + original[-8:])  # one byte flipped
    with pytest.raises(FeaturesUnavailable, match=r"online_flight_outcomes\.parquet .* does not match"):
        read_current(settings)
    outcomes.write_bytes(original)

    manifest = folder / MANIFEST
    edited = json.loads(manifest.read_text())
    edited["tables"]["online_airports"]["rows"] += 1
    manifest.write_text(json.dumps(edited))  # rows "corrected" without the pointer knowing
    with pytest.raises(FeaturesUnavailable, match=r"manifest of features .* is missing or altered"):
        read_current(settings)


def test_old_versions_are_pruned_but_the_current_one_stays(duckdb_built: Settings, tmp_path: Path) -> None:
    settings = duckdb_built.model_copy(
        update={"features_uri": (tmp_path / "features").as_uri(), "features_keep_versions": 2}
    )
    versions = []
    for n in range(4):
        versions.append(publish_features(settings, [_another_build(settings, tmp_path, n)]).version)
    assert len(set(versions)) == 4 and versions == sorted(versions)
    assert sorted(p.name for p in _local_root(settings).iterdir() if p.is_dir()) == versions[-2:]
    assert read_current(settings).version == versions[-1]


def test_the_same_code_publishes_to_and_reads_from_s3(
    duckdb_built: Settings, tmp_path: Path, s3_endpoint: str, s3_keys: tuple[str, str], s3_bucket: str
) -> None:
    """LAB_FEATURES_URI=s3://…: the full stack's API reads the artifact from the object store (SeaweedFS)."""
    settings = duckdb_built.model_copy(
        update={
            "features_uri": f"s3://{s3_bucket}/features",
            "features_keep_versions": 2,
            "s3_endpoint": s3_endpoint,
            "s3_access_key_id": s3_keys[0],
            "s3_secret_access_key": SecretStr(s3_keys[1]),
        }
    )
    with pytest.raises(FeaturesUnavailable, match="run `lab build`"):
        read_current(settings)
    versions = [publish_features(settings, [_another_build(settings, tmp_path, n)]).version for n in range(3)]
    local = read_current(duckdb_built)
    on_s3 = read_current(settings)
    assert on_s3.version == versions[-1]
    for name, table in local.tables.items():
        assert on_s3.tables[name].equals(table), name
    s3 = seaweedfs.client(s3_endpoint, *s3_keys)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="features/")["Contents"]}
    assert f"features/duckdb/{POINTER}" in keys
    assert {k.split("/")[2] for k in keys if k.count("/") == 3} == set(versions[-2:])  # the oldest was pruned
    assert {k.rsplit("/", 1)[1] for k in keys if versions[-1] in k} == {MANIFEST} | {
        f"{name}.parquet" for name in ONLINE_MARTS
    }


def test_each_target_publishes_its_own_features(duckdb_built: Settings) -> None:
    """`--target` switches a settings copy's target: its features live apart from the other target's."""
    postgres = duckdb_built.model_copy(update={"dbt_target": "postgres"})
    assert features_root(duckdb_built) == (duckdb_built.home / "features" / "duckdb").as_uri()
    assert features_root(postgres) == (duckdb_built.home / "features" / "postgres").as_uri()


@pytest.mark.integration
def test_postgres_publishes_the_same_features(duckdb_built: Settings, postgres_built: Settings) -> None:
    on_duckdb, on_postgres = read_current(duckdb_built), read_current(postgres_built)
    assert on_postgres.manifest["dbt"]["target"] == "postgres"
    assert on_postgres.manifest["lake_snapshots"] == on_duckdb.manifest["lake_snapshots"]
    for name, table in on_duckdb.tables.items():
        assert fingerprint(on_postgres.tables[name]) == fingerprint(table), name
