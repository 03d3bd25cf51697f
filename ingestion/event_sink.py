"""The lake sink: the flight events of the stream appended to ``raw.flight_events``, each exactly once.

The sink reads the stream as one consumer of a consumer group (``LAB_SINK_CONSUMER_GROUP``)
and appends micro-batches: a batch closes at ``LAB_SINK_BATCH_EVENTS`` entries or
``LAB_SINK_BATCH_SECONDS`` after its first one. Each batch is one Iceberg commit whose
snapshot summary names the stream and the last entry the batch covers
(``lab.stream.key``, ``lab.stream.last-id``); only after that commit are its entries
acknowledged (XACK). So the table, not Redis, says how far the lake has got:

* Killed after the commit and before the ack, the batch's entries are still pending for
  the group. A restarted sink reads its pending entries first (id ``0``, then ``>``),
  and acks those at or below the committed id without writing them again.
* Killed before the commit, nothing was written; the pending entries are read again and
  written then.
* The same event sent twice (a replay, a second producer: the same ``event_id`` under a
  new stream id) counts once: the ids already in the table are read once at start and
  kept up to date, and a batch keeps the first of its own repeats.

A malformed entry is never dropped: it goes to the lake's quarantine table (as a rejected
row of a raw file does, ``ingestion.quarantine``) with its stream entry as the source,
the fields as received and the reason :class:`ingestion.events.EventError` gives. Those
rows are committed before the batch's events, in a snapshot carrying the same two
properties, so a crash between the two commits does not quarantine an entry twice.

Every row carries the lineage columns of every raw table: ``_source_file`` is the entry,
``redis://host:port/db/<key>#<entry id>`` (no credentials), ``_source_checksum`` the
SHA-256 of its fields as received (see :func:`entry_checksum`), ``_load_id`` the
micro-batch and ``_loaded_at`` when it was committed.

The committed position is one consumer's: entries are delivered to a consumer in id order
and its batches commit in that order, which is what makes "at or below the committed id"
mean "written". Run one sink per group.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of
from pyiceberg.transforms import MonthTransform
from pyiceberg.types import NestedField

from core.errors import LabError
from core.names import FLIGHT_EVENTS_TABLE, QUARANTINE_TABLE
from core.retry import with_retries
from core.settings import Settings
from core.uris import redact
from ingestion.event_stream import Entry, connect, ensure_group, read_entries, stream_uri, through_outages
from ingestion.events import EVENT_SCHEMA, EventError, FlightEvent, from_fields
from ingestion.quarantine import UNKNOWN_PARTITION, quarantine_table
from ingestion.storage import open_catalog
from ingestion.tables import lineage_fields
from ingestion.types import ARROW_TYPES, ICEBERG_TYPES

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

TABLE = FLIGHT_EVENTS_TABLE
# One consumer per group (see the module docstring): its pending entries are the ones a restart reads.
CONSUMER = "sink"
KEY_PROPERTY = "lab.stream.key"
LAST_ID_PROPERTY = "lab.stream.last-id"

# The longest a read waits for entries, so a stop request is seen within about this long.
READ_WAIT_SECONDS = 1.0
# Entries asked for per read, whatever room the batch has: a reply Redis and the sink build in memory.
READ_MAX_ENTRIES = 1_000
ACK_CHUNK = 1_000
# A malformed entry's fields are kept for the quarantine up to this long each: what was wrong
# stays visible, and a hostile producer cannot grow the quarantine by megabytes per entry.
MAX_QUARANTINED_CHARS = 1_024

_ICEBERG_BY_ARROW = {ARROW_TYPES[name]: ICEBERG_TYPES[name] for name in ARROW_TYPES}
_LINEAGE_DOCS = {
    "_source_file": "The stream entry: redis://host:port/db/<key>#<entry id>",
    "_source_checksum": "SHA-256 of the entry's fields as received (sorted-key JSON)",
    "_load_id": "The micro-batch that wrote the row",
    "_loaded_at": "When that micro-batch was committed (UTC)",
}


@dataclass
class SinkReport:
    """What one run of the sink did, entries counted once per delivery."""

    stream: str
    table: str
    started_after: str | None  # the committed stream id the run found in the table
    entries: int = 0  # stream entries read, redeliveries included
    written: int = 0  # events appended to the table
    duplicates: int = 0  # events whose event_id the table (or their batch) already held
    quarantined: int = 0  # malformed entries written to the quarantine table
    already_committed: int = 0  # entries a committed snapshot covers: acked, not written again
    commits: int = 0  # snapshots of the events table
    last_id: str | None = None  # the last entry acked


def events_table_schema() -> Schema:
    """The event fields (:data:`ingestion.events.EVENT_SCHEMA`, required where it says), then the lineage columns."""
    fields = [
        NestedField(i, f.name, _ICEBERG_BY_ARROW[f.type], required=not f.nullable)
        for i, f in enumerate(EVENT_SCHEMA, start=1)
    ]
    return Schema(*fields, *lineage_fields(len(fields) + 1, _LINEAGE_DOCS))


def ensure_events_table(catalog: Catalog, settings: Settings) -> Table:
    """``raw.flight_events``, created if it does not exist yet.

    Partitioned by the month of ``at``, as the raw flights are by month: a batch
    of live events nearly always falls in one month, so one commit writes one file.
    """
    identifier = f"{settings.raw_namespace}.{TABLE}"
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    schema = events_table_schema()
    spec = PartitionSpec(
        PartitionField(
            source_id=schema.find_field("at").field_id, field_id=1000, transform=MonthTransform(), name="at_month"
        )
    )
    properties = {"lab.source": TABLE, "lab.mode": "stream", "lab.primary-key": "event_id"}
    return catalog.create_table_if_not_exists(identifier, schema=schema, partition_spec=spec, properties=properties)


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    """``<ms>-<seq>`` as numbers, which order the way Redis orders entries (text does not: '9-0' > '10-0')."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def committed_position(table: Table, key: str, snapshot_id: int | None = None) -> str | None:
    """The last stream id of ``key`` a commit of ``table`` covers, or None when none does.

    It is read off the newest ancestor of the current snapshot (or of ``snapshot_id``)
    that names the stream: ancestors, not every snapshot, since one rolled back is not
    the table's history.
    """
    start = table.current_snapshot() if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    for snapshot in ancestors_of(start, table.metadata):
        summary = snapshot.summary
        if summary is not None and summary.get(KEY_PROPERTY) == key and LAST_ID_PROPERTY in summary:
            return str(summary[LAST_ID_PROPERTY])
    return None


def committed_event_ids(table: Table) -> set[str]:
    """Every event_id in the table.

    Held in memory: about 1,000 a streamed day, some 30 MB for the bundled year.
    """
    if table.current_snapshot() is None:
        return set()
    ids = table.scan(selected_fields=("event_id",)).to_arrow()["event_id"]
    return set(ids.to_pylist())


def entry_checksum(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> str:
    """SHA-256 of an entry's fields as received: JSON with sorted keys, bytes read as UTF-8.

    The same entry gives the same checksum whichever client read it; a row's
    ``_source_checksum`` is this of ``ingestion.events.to_fields`` of its event when a
    producer published it with :func:`ingestion.event_stream.publish`.
    """
    text = {_text(k): _text(v) for k, v in fields.items()}
    payload = json.dumps(text, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8", "backslashreplace")).hexdigest()


def run_sink(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    max_idle_seconds: float | None = None,
    on_commit: Callable[[SinkReport], None] | None = None,
) -> SinkReport:
    """Write the stream's events into ``raw.flight_events`` until ``stop`` is set (or the stream is idle).

    Args:
        settings: the stream (``LAB_STREAM_*``), the group and batch bounds (``LAB_SINK_*``), the lake.
        stop: set it to end the run; the open batch is committed and acked first, so a
            clean stop leaves nothing pending.
        max_idle_seconds: also end the run once no entry has arrived for this long (the
            open batch committed): drains the stream and returns.
        on_commit: called after each batch's commits and before its ack (the fault
            test's simulated crash hooks in here).

    Raises:
        LabError: Redis does not answer at ``LAB_STREAM_REDIS_URL``, or stopped answering.
    """
    import redis

    client = connect(settings.stream_redis_url)
    try:
        sink = _Sink(settings, client, on_commit)
        return sink.run(stop, max_idle_seconds)
    except redis.RedisError as exc:
        raise LabError(
            redact(
                f"Redis at {settings.stream_redis_url} failed while the sink read {settings.stream_key}: "
                f"{type(exc).__name__}: {exc}. Entries read but not committed stay pending and are read "
                "again when the sink restarts"
            )
        ) from None
    finally:
        client.close()


class _Sink:
    """One run: the stream, the two tables, and what has been committed to them."""

    def __init__(self, settings: Settings, client: redis.Redis, on_commit: Callable[[SinkReport], None] | None) -> None:
        self.settings = settings
        self.client = client
        self.key = settings.stream_key
        self.group = settings.sink_consumer_group
        self.on_commit = on_commit
        self.source = stream_uri(settings.stream_redis_url, self.key)
        ensure_group(client, self.key, self.group)
        self.catalog = open_catalog(settings)
        self.identifier = f"{settings.raw_namespace}.{TABLE}"
        self.table = ensure_events_table(self.catalog, settings)
        self.quarantine = quarantine_table(self.catalog, settings)
        # Through what id each table holds this stream's entries (events; malformed ones).
        self.position = committed_position(self.table, self.key)
        self.quarantined_through = committed_position(self.quarantine, self.key)
        self.seen = committed_event_ids(self.table)
        self.report = SinkReport(stream=self.source, table=self.identifier, started_after=self.position)
        self._cursor = "0"  # this consumer's pending entries first, then ">" (never delivered)
        self.stop: threading.Event | None = None
        log.info(
            "sink: %s as %s/%s into %s, committed through %s",
            self.source,
            self.group,
            CONSUMER,
            self.identifier,
            self.position or "nothing yet",
        )

    def run(self, stop: threading.Event | None, max_idle_seconds: float | None) -> SinkReport:
        self.stop = stop
        batch_events = self.settings.sink_batch_events
        batch_seconds = self.settings.sink_batch_seconds
        batch: list[Entry] = []
        opened = last_arrival = time.monotonic()
        while stop is None or not stop.is_set():
            now = time.monotonic()
            wait = min(READ_WAIT_SECONDS, opened + batch_seconds - now if batch else READ_WAIT_SECONDS)
            if max_idle_seconds is not None:
                wait = min(wait, last_arrival + max_idle_seconds - now)
            entries = self._read(min(batch_events - len(batch), READ_MAX_ENTRIES), wait)
            self._beat()
            now = time.monotonic()
            if entries:
                if not batch:
                    opened = now
                batch.extend(entries)
                self.report.entries += len(entries)
                last_arrival = now
            if batch and (len(batch) >= batch_events or now - opened >= batch_seconds):
                self._close(batch)
                batch = []
            elif not entries and max_idle_seconds is not None and now - last_arrival >= max_idle_seconds:
                break
        if batch:
            self._close(batch)
        return self.report

    def _beat(self) -> None:
        """Touch the heartbeat file: the health check of `lab stack` and compose reads its age."""
        path = self.settings.sink_heartbeat_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def _read(self, count: int, wait: float) -> list[Entry]:
        """Up to ``count`` entries: pending ones while any are left (no waiting), then new ones (waiting ``wait`` s)."""
        # BLOCK 0 would wait for ever; a history read ignores BLOCK.
        block = max(1, int(wait * 1000)) if self._cursor == ">" else None
        reply = through_outages(lambda: self._read_group(count, block), f"the sink read {self.key}", stop=self.stop)
        entries = read_entries(reply)
        if self._cursor != ">":
            self._cursor = entries[-1][0] if entries else ">"
        return entries

    def _read_group(self, count: int, block: int | None) -> object:
        import redis

        try:
            return self.client.xreadgroup(self.group, CONSUMER, {self.key: self._cursor}, count=count, block=block)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis came back without the group (restarted with no persistence): entries are
            # skipped by the committed position and event ids, so reading from the first is safe.
            log.warning("sink: the group %s on %s is gone; created again from the first entry", self.group, self.key)
            ensure_group(self.client, self.key, self.group)
            self._cursor = "0"
            return self.client.xreadgroup(self.group, CONSUMER, {self.key: self._cursor}, count=count, block=block)

    def _close(self, batch: list[Entry]) -> None:
        """Commit the batch (its malformed entries, then its new events), then ack every entry of it."""
        load_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        events: list[tuple[str, Mapping[bytes, bytes], FlightEvent]] = []
        bad: list[tuple[str, Mapping[bytes, bytes] | None, str]] = []
        ids: set[str] = set()
        for entry_id, fields in batch:
            number = parse_stream_id(entry_id)
            if self.position is not None and number <= parse_stream_id(self.position):
                self.report.already_committed += 1
                continue
            event, reason = _parse(fields)
            if event is None or fields is None:
                if self.quarantined_through is not None and number <= parse_stream_id(self.quarantined_through):
                    self.report.already_committed += 1
                else:
                    bad.append((entry_id, fields, reason))
                continue
            if event.event_id in self.seen or event.event_id in ids:
                self.report.duplicates += 1
                continue
            ids.add(event.event_id)
            events.append((entry_id, fields, event))
        last_id = batch[-1][0]
        if bad:
            self._commit_quarantine(bad, last_id, load_id)
        if events:
            self._commit_events(events, last_id, load_id)
        if (bad or events) and self.on_commit is not None:
            self.on_commit(self.report)
        entry_ids = [entry_id for entry_id, _ in batch]
        for start in range(0, len(entry_ids), ACK_CHUNK):
            # Committed: should Redis stay away, the entries are read again and skipped by the position.
            ack = partial(self.client.xack, self.key, self.group, *entry_ids[start : start + ACK_CHUNK])
            through_outages(ack, "the sink acked a commit")
        self.report.last_id = last_id

    def _properties(self, last_id: str, load_id: str, **counts: int) -> dict[str, str]:
        return {
            KEY_PROPERTY: self.key,
            LAST_ID_PROPERTY: last_id,
            "lab.load-id": load_id,
            "lab.source": TABLE,
            "lab.source-files": self.source,
            **{f"lab.{name.replace('_', '-')}": str(count) for name, count in counts.items()},
        }

    def _commit_events(
        self, events: list[tuple[str, Mapping[bytes, bytes], FlightEvent]], last_id: str, load_id: str
    ) -> None:
        loaded_at = datetime.now(UTC)
        rows = [
            {
                **{name: getattr(event, name) for name in EVENT_SCHEMA.names},
                "_source_file": f"{self.source}#{entry_id}",
                "_source_checksum": entry_checksum(fields),
                "_load_id": load_id,
                "_loaded_at": loaded_at,
            }
            for entry_id, fields, event in events
        ]
        properties = self._properties(last_id, load_id, rows_loaded=len(rows))
        self.table = self._append(self.identifier, self.table, rows, properties)
        self.position = last_id
        self.seen.update(event.event_id for _, _, event in events)
        self.report.written += len(rows)
        self.report.commits += 1
        log.info("sink: %d events committed through %s (load %s)", len(rows), last_id, load_id)

    def _commit_quarantine(
        self, bad: list[tuple[str, Mapping[bytes, bytes] | None, str]], last_id: str, load_id: str
    ) -> None:
        quarantined_at = datetime.now(UTC)
        rows = [
            {
                "table_name": self.identifier,
                "partition": UNKNOWN_PARTITION,
                "source_file": f"{self.source}#{entry_id}",
                "source_checksum": entry_checksum(fields) if fields is not None else None,
                "line": None,  # an entry has no line; its id is in source_file
                "raw_text": _raw_text(fields),
                "reason": reason,
                "load_id": load_id,
                "quarantined_at": quarantined_at,
            }
            for entry_id, fields, reason in bad
        ]
        properties = self._properties(last_id, load_id, rows_quarantined=len(rows))
        name = f"{self.settings.raw_namespace}.{QUARANTINE_TABLE}"
        self.quarantine = self._append(name, self.quarantine, rows, properties)
        self.quarantined_through = last_id
        self.report.quarantined += len(rows)
        log.warning("sink: %d malformed entries quarantined through %s (load %s)", len(rows), last_id, load_id)

    def _append(
        self, identifier: str, table: Table, rows: Sequence[Mapping[str, object]], properties: dict[str, str]
    ) -> Table:
        """One append snapshot carrying ``properties``, retried if a concurrent writer (the quarantine's loads) won."""

        def attempt(number: int) -> Table:
            current = table if number == 1 else self.catalog.load_table(identifier)
            current.append(
                pa.Table.from_pylist(rows, schema=current.schema().as_arrow()), snapshot_properties=properties
            )
            return current

        return with_retries(
            attempt,
            retries=self.settings.commit_retries,
            retry_on=(CommitFailedException,),
            what=f"commit conflict on {identifier}",
        )


def _parse(fields: Mapping[bytes, bytes] | None) -> tuple[FlightEvent | None, str]:
    """The event, or None and why it is malformed."""
    if fields is None:
        # A pending entry trimmed or deleted from the stream before the sink stored it.
        return None, "the entry was deleted from the stream before the sink stored it"
    try:
        return from_fields(fields), ""
    except EventError as exc:
        return None, str(exc)


def _raw_text(fields: Mapping[bytes, bytes] | None) -> str:
    if fields is None:
        return ""
    capped = {_capped(_text(k)): _capped(_text(v)) for k, v in fields.items()}
    return json.dumps(capped, ensure_ascii=False)


def _capped(text: str) -> str:
    return text if len(text) <= MAX_QUARANTINED_CHARS else text[:MAX_QUARANTINED_CHARS] + "…"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
