"""One API worker's reader of the flight event stream: every event applied to its features, in stream order.

Every worker needs every event (each holds its own in-memory index), so this is a
plain ``XREAD`` from a position of its own, a fan-out, not a consumer group that
would split the events between workers. Where the batch ends the stream begins:
the published features' manifest names the last stream entry the batch already
counts (``stream.after``, the sink's committed position in the snapshot of
``raw.flight_events`` the build read), and the reader starts right after it. An
event the batch counts anyway (its month's file landed after the sink's commit)
is recognised by its id and not counted twice (``OnlineFeatures.apply``).

Redis going away stops nothing: answers go on from the features as they are,
marked with the watermark they had; the reader retries with a growing pause and,
once Redis answers again, reads on from its position, so nothing is skipped. A
malformed entry is counted and skipped (the lake sink quarantines it with its
reason); it never stops the reader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from core.uris import redact
from ingestion.event_sink import parse_stream_id
from ingestion.event_stream import connect, read_entries
from ingestion.events import EventError, from_fields

if TYPE_CHECKING:
    import redis

    from core.settings import Settings
    from serving.features import OnlineFeatures

log = logging.getLogger(__name__)

READ_COUNT = 1_000  # entries per XREAD; one lock hold applies them all
READ_BLOCK_MS = 1_000  # the longest one XREAD waits, so a stop is seen within about a second
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # pauses between attempts while Redis is away, then 5 s each


@dataclass(frozen=True)
class StreamStatus:
    """What /ready shows of the stream."""

    following: bool
    connected: bool
    position: str | None  # the last entry applied (or the batch's position, before any)
    events_through: datetime | None  # the latest instant an applied event (or the batch) became known
    lag_seconds: float | None  # how far the newest entry's id is ahead of the position, by the ids' clocks
    applied: int  # events applied since the features were loaded
    duplicates: int  # entries whose event was already counted (a redelivery, or in the batch)
    malformed: int  # entries that are not a valid event, skipped
    errors: int  # failed reads of Redis
    gap: bool  # entries after the batch's position were trimmed from the stream before they were read
    last_error: str | None


class StreamFollower:
    """Reads the stream in a thread of its own and applies each event to the features being served.

    ``adopt`` hands it newly loaded features (a reload): it brings them up to its
    position before they replace the old ones, so a swap never loses an event.
    ``wait_for`` lets a request wait until an entry has been applied (the replay's
    ``Lab-Stream-Wait``), so a caller who knows what was published gets exact features.
    """

    def __init__(self, settings: Settings, features: OnlineFeatures, after: str) -> None:
        self.url = settings.stream_redis_url
        self.key = settings.stream_key
        self._features = features
        self._position = after
        self._applied_to = threading.Condition()  # guards the features, the position and the counts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None
        self._connected = False
        self._applied = self._duplicates = self._malformed = self._errors = 0
        self._gap = False
        self._newest: str | None = None
        self._last_error: str | None = None

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stream-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=READ_BLOCK_MS / 1000 + 5)
        if self._client is not None:
            self._client.close()

    # --- what requests and reloads use ----------------------------------------------------

    @property
    def position(self) -> str:
        return self._position

    def reached(self, entry_id: str) -> bool:
        """Whether every entry up to and including ``entry_id`` has been applied."""
        return parse_stream_id(self._position) >= parse_stream_id(entry_id)

    def wait_for(self, entry_id: str, timeout: float) -> bool:
        """Block until ``entry_id`` has been applied, or ``timeout`` seconds pass; whether it was."""
        target = parse_stream_id(entry_id)
        with self._applied_to:
            return self._applied_to.wait_for(lambda: parse_stream_id(self._position) >= target, timeout)

    def adopt(self, features: OnlineFeatures, after: str) -> None:
        """Bring ``features`` (covering the stream through ``after``) up to this reader's position, then follow them.

        Raises:
            LabError: Redis does not answer, so the new features cannot be brought
                up to date; the caller keeps serving the old ones.
        """
        with self._applied_to:
            if parse_stream_id(after) < parse_stream_id(self._position):
                client = connect(self.url)
                try:
                    cursor = after
                    while parse_stream_id(cursor) < parse_stream_id(self._position):
                        reply = client.xrange(self.key, min=f"({cursor}", max=self._position, count=READ_COUNT)
                        entries = read_entries([(self.key, reply)])
                        if not entries:
                            break
                        for entry_id, fields in entries:
                            self._apply_to(features, fields, count=False)
                            cursor = entry_id
                finally:
                    client.close()
            else:
                self._position = after
            self._features = features

    def status(self) -> StreamStatus:
        with self._applied_to:
            position = self._position
            newest = self._newest
            lag = None
            if newest is not None:
                lag = max(0.0, (parse_stream_id(newest)[0] - parse_stream_id(position)[0]) / 1000)
            return StreamStatus(
                following=True,
                connected=self._connected,
                position=position,
                events_through=self._features.events_through,
                lag_seconds=lag,
                applied=self._applied,
                duplicates=self._duplicates,
                malformed=self._malformed,
                errors=self._errors,
                gap=self._gap,
                last_error=self._last_error,
            )

    # --- the reader -------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._read_once()
                failures = 0
            except Exception as exc:  # Redis away or refusing: serve on, retry
                self._connected = False
                self._errors += 1
                self._last_error = redact(f"{type(exc).__name__}: {exc}")
                if failures == 0:
                    log.error("stream %s unreadable (%s); serving on, retrying", self.key, self._last_error)
                self._drop_client()
                self._stop.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    def _read_once(self) -> None:
        if self._client is None:
            self._client = connect(self.url)
            self._check_gap(self._client)
            if not self._connected:
                log.info("following stream %s from %s", self.key, self._position)
        reply = self._client.xread({self.key: self._position}, count=READ_COUNT, block=READ_BLOCK_MS)
        self._connected = True
        entries = read_entries(reply)
        if not entries:
            return
        with self._applied_to:
            for entry_id, fields in entries:
                self._apply_to(self._features, fields, count=True)
                self._position = entry_id
            self._newest = (
                self._position if self._newest is None else max(self._newest, self._position, key=parse_stream_id)
            )
            self._applied_to.notify_all()
        if len(entries) == READ_COUNT:  # more is waiting: ask how far behind the reader is
            self._note_newest(self._client)

    def _apply_to(self, features: OnlineFeatures, fields: Mapping[bytes, bytes] | None, *, count: bool) -> None:
        try:
            if fields is None:
                raise EventError("fields", "the entry was deleted from the stream before it was read")
            event = from_fields(fields)
        except EventError as exc:
            if count:
                self._malformed += 1
                if self._malformed == 1 or self._malformed % 1000 == 0:
                    log.warning("skipped a malformed stream entry (%d so far): %s", self._malformed, exc)
            return
        if features.apply(event):
            if count:
                self._applied += 1
        elif count:
            self._duplicates += 1

    def _note_newest(self, client: redis.Redis) -> None:
        info = client.xinfo_stream(self.key)
        last = info.get("last-generated-id")
        if last is not None:
            with self._applied_to:
                self._newest = last.decode() if isinstance(last, bytes) else str(last)

    def _check_gap(self, client: redis.Redis) -> None:
        """Whether entries after the position were deleted before they were read (Redis 7 records the largest)."""
        try:
            info = client.xinfo_stream(self.key)
        except Exception:  # no such stream yet: nothing to miss
            return
        deleted = info.get("max-deleted-entry-id")
        last = info.get("last-generated-id")
        if deleted is not None:
            deleted_id = deleted.decode() if isinstance(deleted, bytes) else str(deleted)
            if parse_stream_id(deleted_id) > parse_stream_id(self._position):
                if not self._gap:
                    log.error(
                        "stream %s lost entries after %s (deleted through %s): features may miss events",
                        self.key,
                        self._position,
                        deleted_id,
                    )
                self._gap = True
        if last is not None:
            with self._applied_to:
                self._newest = last.decode() if isinstance(last, bytes) else str(last)

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None


def not_following() -> StreamStatus:
    """The status of an API that does not follow the stream (LAB_SERVE_FOLLOW_STREAM off)."""
    return StreamStatus(
        following=False,
        connected=False,
        position=None,
        events_through=None,
        lag_seconds=None,
        applied=0,
        duplicates=0,
        malformed=0,
        errors=0,
        gap=False,
        last_error=None,
    )
