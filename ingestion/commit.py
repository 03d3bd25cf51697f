"""The one snapshot a load commits: an overwrite that swaps data files, re-planned when a concurrent writer wins."""

from __future__ import annotations

from collections.abc import Callable

from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import Table

from core.retry import with_retries

# Called on the freshly loaded table before each attempt: (files to remove, files to add).
Plan = Callable[[Table], tuple[list[DataFile], list[DataFile]]]


def data_files_in(table: Table, partitions: set[int] | None) -> list[DataFile]:
    """Data files of the current snapshot, optionally only those of some months."""
    snapshot = table.current_snapshot()
    if snapshot is None:
        return []
    files = []
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if partitions is None or entry.data_file.partition[0] in partitions:
                files.append(entry.data_file)
    return files


def commit_with_retry(
    load_table: Callable[[], Table],
    build: Plan,
    properties: dict[str, str],
    retries: int,
    *,
    what: str = "commit conflict",
) -> tuple[Table, int]:
    """Commit one overwrite snapshot, retrying when a concurrent writer won the race.

    ``build`` is called on a fresh table each attempt and returns (files to remove,
    files to add), so the delete set always matches the snapshot being replaced.
    pyiceberg 0.12 retries a stale commit itself, but keeps its stale delete set and
    so refuses (``ValidationException``) an overwrite whose base gained files in the
    meantime, even in another partition; re-planning here makes such races succeed.
    Attempts are spaced by ``core.retry``'s jittered backoff; ``what`` names the
    commit in its log line.

    Returns:
        The committed table (updated in place by the commit: no need to read it
        back) and the number of attempts it took.
    """

    def attempt(number: int) -> tuple[Table, int]:
        table = load_table()
        remove, add = build(table)
        with table.transaction() as txn, txn.update_snapshot(snapshot_properties=properties).overwrite() as files:
            for data_file in remove:
                files.delete_data_file(data_file)
            for data_file in add:
                files.append_data_file(data_file)
        return table, number

    return with_retries(attempt, retries=retries, retry_on=(CommitFailedException, ValidationException), what=what)
