"""The online features as a published artifact: the marts the API serves, frozen after a green build.

The API must not read the warehouse. A DuckDB file admits one writing process
or any number of readers, never both, so an API that opened it would lock a
running build out or be locked out by it; and a build whose tests fail has
already rewritten the tables they tested. So only after a build in which every
node passed are the online marts (every mart named ``online_*``) exported, as
Parquet files plus a manifest, to a new version; one small pointer, replaced
last, names the version the API loads. A failed build publishes nothing, so
what is served stays what it was.

Layout under ``features_root(settings)`` (a folder, or an S3 prefix)::

    current.json                  {"version": ..., "manifest_sha256": ...}
    <version>/manifest.json       the build, the lake snapshots, the stream position they
                                  cover, rows and sha256 per file
    <version>/<mart>.parquet

On a folder a version is staged in a hidden folder beside the others and
renamed into place, and the pointer is replaced with ``os.replace``. On S3 every
object appears whole (a PUT is atomic): the manifest goes up after the files it
names and the pointer after the manifest. A reader follows the pointer, checks
the manifest against the pointer's checksum and every file against the
manifest's, so it gets one whole green version or an error, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.errors import LabError
from core.files import fsync_directory
from core.names import FLIGHT_EVENTS_TABLE, ONLINE_MART_PREFIX
from core.settings import Settings
from core.uris import is_s3

log = logging.getLogger(__name__)

FORMAT = 1  # the manifest's layout; a reader refuses any other
POINTER = "current.json"
MANIFEST = "manifest.json"
STREAM_START = "0-0"  # a stream position before its first entry
# dbt result statuses of a green build: models "success", tests "pass" (or "warn":
# a test of warn severity that found rows, which dbt itself counts as passing),
# exposures "no-op".
PASSING = frozenset({"success", "pass", "warn", "no-op"})
# The dbt commands whose results can vouch for built and tested marts (Airflow's
# local mode runs `dbt build` per model and `dbt test` for tests of several models).
BUILDING_COMMANDS = frozenset({"build", "run", "test"})


class FeaturesUnavailable(LabError):
    """No verified online features can be read: none published yet, or a file that does not match its manifest."""


class NotPublished(LabError):
    """The build's results do not show every online mart built and tested; nothing was published."""


@dataclass(frozen=True)
class Publication:
    """What a publish did: the version now current, and whether this call wrote it."""

    version: str
    rows: dict[str, int]
    written: bool  # False: the current version already came from these same dbt invocations
    location: str


@dataclass(frozen=True)
class PublishedFeatures:
    """One verified version of the online features, read into Arrow."""

    version: str
    manifest: dict[str, Any]
    tables: dict[str, pa.Table]


def features_root(settings: Settings) -> str:
    """Where the online features of ``settings.dbt_target`` are published (a folder URI or S3 prefix).

    Computed rather than filled in by the settings: ``--target`` changes the
    target of a settings copy, and each target publishes its own features.
    """
    base = settings.features_uri or (settings.home / "features").as_uri()
    return f"{base.rstrip('/')}/{settings.dbt_target}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    """Write and flush to disk, so a rename that publishes the file never outlives its content in a crash."""
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


class _Store:
    """The artifact's root, local or on S3, through one pyarrow filesystem."""

    def __init__(self, settings: Settings) -> None:
        self.root = features_root(settings)
        parsed = urlparse(self.root)
        if is_s3(self.root):
            from ingestion.storage import ObjectStore  # the S3 client the lake's landing area uses

            self.fs: pafs.FileSystem = ObjectStore(self.root, settings).fs
            self.local: Path | None = None
            self.base = f"{parsed.netloc}{parsed.path}"
        else:
            self.fs = pafs.LocalFileSystem()
            self.local = Path(parsed.path)
            self.base = parsed.path

    def path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        path = self.path(key)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as stream:
            return bytes(stream.read())

    def put_version(self, version: str, files: dict[str, bytes]) -> None:
        """Write a version's files, ``manifest.json`` last, so a version with a manifest is whole."""
        ordered = sorted(files.items(), key=lambda item: item[0] == MANIFEST)
        if self.local is None:
            for name, data in ordered:
                with self.fs.open_output_stream(self.path(f"{version}/{name}")) as out:
                    out.write(data)
            return
        self.local.mkdir(parents=True, exist_ok=True)
        staging = self.local / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, data in ordered:
                _write_synced(staging / name, data)
            os.rename(staging, self.local / version)  # the whole folder appears at once
            fsync_directory(self.local)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def put_pointer(self, data: bytes) -> None:
        """Replace the pointer in one step: readers see the old one or the new one."""
        if self.local is None:
            with self.fs.open_output_stream(self.path(POINTER)) as out:
                out.write(data)
            return
        tmp = self.local / f".{POINTER}.{uuid.uuid4().hex}"
        _write_synced(tmp, data)
        os.replace(tmp, self.local / POINTER)
        fsync_directory(self.local)

    def versions(self) -> list[str]:
        """Every version folder, oldest first (version ids sort by time)."""
        selector = pafs.FileSelector(self.base, recursive=False, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and not info.base_name.startswith(".")
        )

    def delete_version(self, version: str) -> None:
        self.fs.delete_dir(self.path(version))


def online_marts(dbt_manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Model name -> manifest node of every mart the API serves (``models/marts/online_*``)."""
    return {
        node["name"]: node
        for node in dbt_manifest["nodes"].values()
        if node["resource_type"] == "model" and "marts" in node["fqn"] and node["name"].startswith(ONLINE_MART_PREFIX)
    }


def check_green(runs: Sequence[dict[str, Any]], dbt_manifest: dict[str, Any]) -> list[str]:
    """The invocation ids of ``runs`` (dbt ``run_results.json`` documents), if together they vouch for the online marts.

    Every node in every run must have passed, and every online mart must have
    been built ("success") with every data and unit test on it run and passed.

    Raises:
        NotPublished: a node failed, errored or was skipped, a run is not a
            build, or an online mart or one of its tests is missing from the runs.
    """
    if not runs:
        raise NotPublished("no dbt results to check; run `lab build`")
    statuses: dict[str, list[str]] = {}
    for run in runs:
        which = run.get("args", {}).get("which")
        if which not in BUILDING_COMMANDS:
            raise NotPublished(f"these are the results of `dbt {which}`, not of a build")
        for result in run["results"]:
            statuses.setdefault(result["unique_id"], []).append(result["status"])
    # What failed first, then what dbt skipped because of it.
    failed = sorted(
        (uid for uid, found in statuses.items() if not set(found) <= PASSING),
        key=lambda uid: (set(statuses[uid]) <= {"skipped"}, uid),
    )
    if failed:
        shown = ", ".join(f"{uid} ({'/'.join(statuses[uid])})" for uid in failed[:5])
        raise NotPublished(f"the build did not pass: {shown}")
    marts = {node["unique_id"] for node in online_marts(dbt_manifest).values()}
    if not marts:
        raise NotPublished(f"the dbt project has no {ONLINE_MART_PREFIX}* marts")
    checks = [
        node["unique_id"]
        for node in [*dbt_manifest["nodes"].values(), *dbt_manifest.get("unit_tests", {}).values()]
        if node["resource_type"] in {"test", "unit_test"} and marts & set(node["depends_on"]["nodes"])
    ]
    missing = sorted(uid for uid in marts if "success" not in statuses.get(uid, []))
    missing += sorted(uid for uid in checks if uid not in statuses)
    if missing:
        raise NotPublished(f"the build did not build and test every online mart: {', '.join(missing[:5])} not run")
    return sorted({str(run["metadata"]["invocation_id"]) for run in runs})


def publish_features(settings: Settings, results: Sequence[Path] | None = None) -> Publication:
    """Export the online marts as a new version and make it current, if the build's results are green.

    Args:
        results: the ``run_results.json`` of the build (several when the build
            ran as several dbt invocations, as in Airflow's local mode).
            Default: the last dbt command's, which after ``lab build``'s
            ``dbt build`` are that build's.

    Publishing the same invocations again changes nothing (an Airflow retry).

    Raises:
        NotPublished: the results do not vouch for the marts (``check_green``).
    """
    from warehouse.dbt import manifest_path, target_dir
    from warehouse.query import query_all
    from warehouse.snapshots import recorded

    paths = list(results) if results is not None else [target_dir(settings) / "run_results.json"]
    absent = [str(path) for path in paths if not path.exists()]
    if absent:
        raise NotPublished(f"no dbt results at {', '.join(absent)}; run `lab build`")
    dbt_manifest = json.loads(manifest_path(settings).read_text())
    invocations = check_green([json.loads(path.read_text()) for path in paths], dbt_manifest)

    store = _Store(settings)
    current = _current_manifest(store)
    if current is not None and current["dbt"]["invocation_ids"] == invocations:
        rows = {name: entry["rows"] for name, entry in current["tables"].items()}
        return Publication(current["version"], rows, written=False, location=store.root)

    marts = online_marts(dbt_manifest)
    relations = {name: f"{node['schema']}.{node['alias']}" for name, node in sorted(marts.items())}
    tables = query_all(settings, {name: f"select * from {relation}" for name, relation in relations.items()})
    lake_snapshots = recorded(settings)
    created = datetime.now(UTC)
    version = f"{created:%Y%m%dT%H%M%S%f}Z-{_sha256(' '.join(invocations).encode())[:8]}"
    files: dict[str, bytes] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        files[f"{name}.parquet"] = data
        entries[name] = {
            "file": f"{name}.parquet",
            "relation": relations[name],
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": _sha256(data),
        }
    manifest = {
        "format": FORMAT,
        "version": version,
        "created_at": created.isoformat(),
        "dbt": {"target": settings.dbt_target, "invocation_ids": invocations},
        "lake_snapshots": {name: str(snapshot) for name, snapshot in lake_snapshots.items()},
        "stream": {"key": settings.stream_key, "after": stream_position(settings, lake_snapshots)},
        "tables": entries,
    }
    files[MANIFEST] = json.dumps(manifest, indent=2, sort_keys=True).encode()
    store.put_version(version, files)
    store.put_pointer(json.dumps({"version": version, "manifest_sha256": _sha256(files[MANIFEST])}).encode())
    log.info("online features %s published to %s", version, store.root)
    _prune(store, settings.features_keep_versions, version)
    return Publication(version, {name: entry["rows"] for name, entry in entries.items()}, True, store.root)


def stream_position(settings: Settings, lake_snapshots: dict[str, int]) -> str:
    """The last entry of the flight event stream the build counted: where an API worker starts reading it.

    The build read ``raw.flight_events`` at the snapshot ``lake_snapshots`` names, and
    that snapshot's summary (the sink writes it with each commit) says through which
    entry of ``settings.stream_key`` it holds every event. No such table or commit:
    the build counted nothing of the stream, which is then read from its start.
    """
    from ingestion.event_sink import committed_position
    from ingestion.storage import open_catalog

    snapshot = lake_snapshots.get(FLIGHT_EVENTS_TABLE)
    if snapshot is None:
        return STREAM_START
    table = open_catalog(settings).load_table(f"{settings.raw_namespace}.{FLIGHT_EVENTS_TABLE}")
    return committed_position(table, settings.stream_key, snapshot) or STREAM_START


def _prune(store: _Store, keep: int, current: str) -> None:
    """Delete all but the newest ``keep`` versions; never the current one."""
    for version in store.versions()[:-keep]:
        if version != current:
            store.delete_version(version)


def _current_manifest(store: _Store) -> dict[str, Any] | None:
    """The current version's verified manifest, or None (nothing, or nothing valid, is current)."""
    try:
        return _read_manifest(store)
    except FeaturesUnavailable:
        return None


def _read_manifest(store: _Store) -> dict[str, Any]:
    pointer = store.read(POINTER)
    if pointer is None:
        raise FeaturesUnavailable(f"no online features are published at {store.root}; run `lab build`")
    try:
        current = json.loads(pointer)
        version, expected = str(current["version"]), str(current["manifest_sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise FeaturesUnavailable(f"{store.root}/{POINTER} is not a features pointer ({exc!r})") from None
    data = store.read(f"{version}/{MANIFEST}")
    if data is None or _sha256(data) != expected:
        raise FeaturesUnavailable(f"the manifest of features {version} is missing or altered; run `lab build`")
    manifest: dict[str, Any] = json.loads(data)
    if manifest.get("format") != FORMAT or manifest.get("version") != version:
        raise FeaturesUnavailable(f"features {version} have an unknown manifest layout")
    return manifest


def read_current(settings: Settings) -> PublishedFeatures:
    """The current version of the online features, every file checked against its manifest.

    Raises:
        FeaturesUnavailable: nothing is published yet, or any file is missing
            or does not match the manifest (sha256, row count).
    """
    store = _Store(settings)
    manifest = _read_manifest(store)
    version = manifest["version"]
    if manifest["dbt"]["target"] != settings.dbt_target:
        raise FeaturesUnavailable(f"features {version} were built on {manifest['dbt']['target']}")
    tables = {}
    for name, entry in manifest["tables"].items():
        data = store.read(f"{version}/{entry['file']}")
        if data is None or _sha256(data) != entry["sha256"]:
            raise FeaturesUnavailable(f"{entry['file']} of features {version} does not match its manifest")
        table = pq.read_table(pa.BufferReader(data))
        if table.num_rows != entry["rows"]:
            found = f"{table.num_rows} rows, not {entry['rows']}"
            raise FeaturesUnavailable(f"{entry['file']} of features {version} holds {found}")
        tables[name] = table
    return PublishedFeatures(version, manifest, tables)


def current_version(settings: Settings) -> str | None:
    """The version the pointer names, if it is valid (for status lines; loading verifies the files too)."""
    manifest = _current_manifest(_Store(settings))
    return str(manifest["version"]) if manifest is not None else None
