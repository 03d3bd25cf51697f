"""The flight events on Redis Streams: connecting, publishing, the consumer group a reader needs.

A stream entry is one event's wire fields (:func:`ingestion.events.to_fields`); its id,
``<milliseconds>-<sequence>``, is the stream position a consumer records. Entries are
never trimmed here: every consumer (the lake sink, the API's workers) keeps its own
position, and the stream is the one copy until each has read it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlparse, urlunparse

from core.errors import LabError
from core.uris import redact
from ingestion.events import FlightEvent, to_fields

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)
T = TypeVar("T")

Entry = tuple[str, Mapping[bytes, bytes] | None]  # (stream id, fields); no fields: deleted from the stream

# Entries per pipelined round trip: enough to hide the network, little enough to hold.
PUBLISH_CHUNK = 1_000
# A blocked XREADGROUP waits up to a few seconds (the sink asks for at most 1 s); the socket
# waits longer, so a read that times out is Redis going away, not the wait ending.
SOCKET_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 3.0
# How long a publisher or the sink waits for a Redis that went away (a restart, a failover) before
# giving up, and the pauses between attempts: a restart of a Redis with its append-only file is seconds.
OUTAGE_SECONDS = 120.0
RETRY_PAUSES = (0.1, 0.2, 0.5, 1.0, 2.0)


def connect(url: str) -> redis.Redis:
    """A client of the Redis at ``url`` that answered a PING (values as bytes, as the wire has them).

    Raises:
        LabError: nothing answers there, or it refused the connection (names the URL, password hidden).
    """
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS
        )
    except ValueError as exc:  # not a redis://, rediss:// or unix:// URL
        raise LabError(redact(f"LAB_STREAM_REDIS_URL {url!r} is not a Redis URL: {exc}")) from None
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise LabError(
            redact(f"no Redis answers at {url} (LAB_STREAM_REDIS_URL): {type(exc).__name__}: {exc}")
        ) from None
    return client


def stream_uri(url: str, key: str) -> str:
    """``redis://host:port/db/<key>``: where the events came from, as lineage, without user or password."""
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    netloc = f"[{host}]" if ":" in host else host
    if parsed.port is not None:
        netloc = f"{netloc}:{parsed.port}"
    database = parsed.path.strip("/") or "0"
    return urlunparse((parsed.scheme or "redis", netloc, f"/{database}/{key}", "", "", ""))


def publish(client: redis.Redis, key: str, events: Iterable[FlightEvent]) -> str | None:
    """Add each event to the stream ``key`` in order; the last entry's id, or None when there were none."""
    last: str | None = None
    pipe = client.pipeline(transaction=False)
    pending = 0
    for event in events:
        pipe.xadd(key, to_fields(event))  # type: ignore[arg-type]  # a dict[str, str] is valid field data
        pending += 1
        if pending == PUBLISH_CHUNK:
            last = _decode_id(pipe.execute()[-1])
            pending = 0
    if pending:
        last = _decode_id(pipe.execute()[-1])
    return last


def through_outages(
    call: Callable[[], T],
    what: str,
    *,
    patience: float = OUTAGE_SECONDS,
    stop: threading.Event | None = None,
    on_outage: Callable[[str], None] | None = None,
) -> T:
    """``call()``, again after each lost connection to Redis, for up to ``patience`` seconds of outage.

    Only a lost or refused connection (``ConnectionError``, ``TimeoutError``) is retried: a
    command Redis refuses is an error of the caller's. redis-py reconnects on the next command,
    so calling again is all a retry takes. A retried XADD may have been applied before the
    connection dropped, so a publisher may add an entry twice; every consumer counts an event
    once by its id, so that changes no count.

    Raises:
        redis.ConnectionError | redis.TimeoutError: still away after ``patience`` seconds
            (or when ``stop`` is set).
    """
    import redis

    deadline: float | None = None
    attempt = 0
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            now = time.monotonic()
            if deadline is None:
                deadline = now + patience
                reason = redact(f"{type(exc).__name__}: {exc}")
                log.warning("Redis went away while %s (%s); retrying for up to %.0f s", what, reason, patience)
                if on_outage is not None:
                    on_outage(f"Redis went away while {what} ({reason}); retrying for up to {patience:.0f} s")
            if now >= deadline or (stop is not None and stop.is_set()):
                raise
            pause = RETRY_PAUSES[min(attempt, len(RETRY_PAUSES) - 1)]
            attempt += 1
            if stop is not None:
                stop.wait(pause)
            else:
                time.sleep(pause)


def ensure_group(client: redis.Redis, key: str, group: str) -> None:
    """Create the consumer group (and the stream, if missing) reading from the first entry; an existing one stays.

    From the first entry, not the last: events published before the group's first
    reader started are the group's to read too.
    """
    import redis

    try:
        client.xgroup_create(key, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _decode_id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_entries(reply: object) -> list[Entry]:
    """The entries of an XREAD or XREADGROUP reply (RESP2 list or RESP3 map), ids as text.

    An XRANGE reply is the entry list of one stream: ``read_entries([(key, reply)])``.
    """
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else [item[1] for item in reply]  # type: ignore[attr-defined]
    out: list[Entry] = []
    for entries in streams:
        for entry_id, fields in entries:
            out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields or None))
    return out
