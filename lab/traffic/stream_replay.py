"""The stream replay: a timeline of real 2013 flights, events onto the stream and requests to the API, in order.

It walks a :class:`lab.traffic.timeline.Timeline` once. Each run of consecutive events is
published with one pipelined XADD (``ingestion.event_stream.publish``), keeping the id of
the last entry; each request is then sent with ``Lab-Stream-Wait: <that id>``, so the API
worker that answers it first applies every entry up to that id: every outcome known
before the request's instant, so the features can be exact. A request is handed to the sending
threads only after the events before it in the timeline are on the stream; events after
it may reach the stream before it is sent, which changes nothing it is answered with,
because a prediction at P counts only what was known strictly before P.

``speed`` maps timeline time to wall time (86,400: a day a second); None sends as fast
as the stream and the API take it. The counts say what the API answered, and whether each
answer was **exact**: its ``events_through`` at least the instant of the latest real event
published before the request; and whether its worker had applied the entry it was asked to
wait for (its ``stream_position``), which is what ``Lab-Stream-Wait`` promises even when the
published batch already holds the replayed days and every answer is exact anyway.

A fault is opt-in, one of :data:`FAULTS`, and labelled SIMULATED wherever it is reported:
an exact duplicate of a published event, a malformed entry, or a real event held back and
published after later ones. None changes what a flight did: the duplicate and the held
event are real events sent again or late, and the malformed entry is a published event's
fields without its ``at``, which every reader refuses (were one to take it anyway, it
would be a duplicate, not a new outcome).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pyarrow as pa

from core.errors import LabError
from ingestion.event_stream import publish, through_outages
from ingestion.events import FlightEvent, iter_events, to_fields
from lab.traffic.timeline import EVENT, Timeline, as_datetime, micros, micros_column

if TYPE_CHECKING:
    import redis

STREAM_WAIT_HEADER = "Lab-Stream-Wait"
FAULTS = ("duplicate", "malformed", "out-of-order")
# The out-of-order fault publishes its event after this many later events.
HELD_BACK_EVENTS = 20
# Requests in flight per sending thread: enough to keep each busy, few enough that the
# stream runs only a little ahead of the requests.
IN_FLIGHT_PER_THREAD = 2
PROGRESS_EVERY = 100  # requests between progress reports
SAMPLE_EVERY = 500  # answers between the samples a replay keeps to show
# After the last request, how long the replay waits for the API to apply the last entry, for the
# watermark it reports; entries after the last request (late events, a released held event) come after it.
SETTLE_SECONDS = 5.0


@dataclass
class StreamReplayResult:
    """What a stream replay published and sent, and what came back."""

    events: int = 0  # real events published (a simulated duplicate is not one)
    requests: int = 0  # requests sent
    answered: int = 0  # answered 200
    refused: Counter[int] = field(default_factory=Counter)  # requests per other HTTP status
    first_refusal: str = ""  # the first non-200 answer: status and body, shortened
    exact: int = 0  # 200s whose events_through reached the latest event published before the request
    stale: int = 0  # 200s whose events_through did not (or was null)
    first_stale: str = ""
    behind: int = 0  # 200s whose stream_position had not reached the Lab-Stream-Wait entry they carried
    faults: Counter[str] = field(default_factory=Counter)  # simulated faults, per kind
    fault_notes: list[str] = field(default_factory=list)  # each "SIMULATED FAULT: ..." line
    last_id: str | None = None  # the last entry added to the stream
    last_event_at: datetime | None = None  # the latest instant of a real event published
    api_stream: dict[str, Any] | None = None  # the API's /ready "stream" object after the replay
    seconds: float = 0.0
    samples: list[dict[str, Any]] = field(default_factory=list)  # every SAMPLE_EVERY-th answer: request and answer
    redis_outages: int = 0  # times Redis went away while the replay published (each ridden out, or the replay failed)


def parse_speed(text: str) -> float | None:
    """``max`` (None: no sleeping) or a positive number of timeline seconds per wall second."""
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        raise LabError(f"--speed {text!r} is neither a number nor 'max'") from None
    if not speed > 0 or speed == float("inf"):
        raise LabError(f"--speed {text!r} must be a positive finite number (or 'max')")
    return speed


def wall_offsets(instants_us: np.ndarray, speed: float | None) -> np.ndarray:
    """Seconds after the start at which each timeline instant is due (all 0 at ``max``)."""
    if speed is None or len(instants_us) == 0:
        return np.zeros(len(instants_us))
    return (instants_us - instants_us[0]) / 1e6 / speed


def check_faults(kinds: Iterable[str]) -> tuple[str, ...]:
    """The simulated faults asked for, each once, in the order of :data:`FAULTS`; LabError on an unknown one."""
    asked = set(kinds)
    unknown = sorted(asked - set(FAULTS))
    if unknown:
        raise LabError(f"--simulate-fault {unknown[0]!r}: the simulated faults are {', '.join(FAULTS)}")
    return tuple(kind for kind in FAULTS if kind in asked)


def api_stream_status(http: httpx.Client, url: str) -> dict[str, Any] | None:
    """The ``stream`` object of the API's ``GET /ready`` (None if it has none).

    Raises:
        LabError: nothing answers at ``url``.
    """
    try:
        response = http.get("/ready")
    except httpx.TransportError as exc:
        raise LabError(
            f"no API answers at {url} ({type(exc).__name__}); start it with `lab serve`, or pass --url"
        ) from None
    try:
        body = response.json()
    except ValueError:
        return None
    stream = body.get("stream") if isinstance(body, dict) else None
    return stream if isinstance(stream, dict) else None


def stream_replay(
    timeline: Timeline,
    *,
    redis_client: redis.Redis,
    key: str,
    url: str,
    speed: float | None = None,
    faults: Sequence[str] = (),
    threads: int = 4,
    timeout: float = 30.0,
    on_fault: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> StreamReplayResult:
    """Walk ``timeline``: publish its events to the stream ``key``, send its requests to the API at ``url``.

    Args:
        speed: timeline seconds per wall second; None: no sleeping.
        faults: simulated faults to inject (:data:`FAULTS`), each once, halfway through the events.
        threads: requests sent at a time.
        on_fault: called with each "SIMULATED FAULT: ..." line as it happens.
        progress: called with the number of requests sent so far.

    Raises:
        LabError: nothing answers at ``url``, or it stops answering.
    """
    result = StreamReplayResult()
    chosen = check_faults(faults)
    bodies = timeline.iter_bodies()  # requests are walked in their table's order
    offsets = wall_offsets(timeline.instant, speed)
    # Where each run of one kind ends: a run of events is one pipelined publish.
    boundaries = np.append(np.flatnonzero(np.diff(timeline.kind)) + 1, len(timeline))
    publisher = EventPublisher(redis_client, key, timeline.events, chosen, result, on_fault)
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=timeout) as http:
        api_stream_status(http, url)  # nothing there: one clear line before anything is published
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stream-replay") as pool:
            sender = _Sender(http, pool, threads * IN_FLIGHT_PER_THREAD, result)
            i, n = 0, len(timeline)
            while i < n:
                end = n
                if speed is not None:
                    time.sleep(max(0.0, started + offsets[i] - time.monotonic()))
                    end = max(i + 1, int(np.searchsorted(offsets, time.monotonic() - started, side="right")))
                while i < end:
                    if timeline.kind[i] == EVENT:
                        j = min(end, int(boundaries[np.searchsorted(boundaries, i, side="right")]))
                        publisher.publish(j - i)
                        i = j
                    else:
                        sender.check(url)
                        sender.submit(next(bodies), publisher.last_id, publisher.max_at_us)
                        i += 1
                        if progress is not None and result.requests % PROGRESS_EVERY == 0:
                            progress(result.requests)
            publisher.finish()
            sender.wait()
            if progress is not None:
                progress(result.requests)
        sender.check(url)
        result.api_stream = _settled(http, url, publisher.last_id)
    result.last_id = publisher.last_id
    if publisher.max_at_us is not None:
        result.last_event_at = as_datetime(publisher.max_at_us)
    result.seconds = time.monotonic() - started
    return result


def _settled(http: httpx.Client, url: str, last_id: str | None) -> dict[str, Any] | None:
    """The API's stream status once it has applied ``last_id`` (or after SETTLE_SECONDS, as it is then)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        stream = api_stream_status(http, url)
        if stream is None or last_id is None or stream.get("following") is False or time.monotonic() > deadline:
            return stream
        position = stream.get("position")
        try:
            if isinstance(position, str) and _entry_id(position) >= _entry_id(last_id):
                return stream
        except ValueError:
            return stream
        time.sleep(0.1)


class EventPublisher:
    """A timeline's events onto the stream ``key``, in order, the simulated faults woven in where asked.

    ``publish(n)`` adds the next ``n`` events; ``finish()`` releases an event still held back.
    ``last_id`` is the last entry added (whatever it holds), ``max_at_us`` the latest instant
    of a real event published, the least an exact answer's ``events_through`` can be.
    """

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        events: pa.Table,
        faults: Sequence[str] = (),
        result: StreamReplayResult | None = None,
        note: Callable[[str], None] | None = None,
    ) -> None:
        self.client, self.key = client, key
        self.events = iter_events(events)
        self.event_at = micros_column(events["at"])
        self.result = result if result is not None else StreamReplayResult()
        self.note = note or (lambda _: None)
        self.pending = set(check_faults(faults))
        # Halfway, so that the stream holds real events on both sides of every fault.
        self.fault_at = max(1, len(self.event_at) // 2)
        self.next = 0  # the index of the next event of the timeline
        self.last_id: str | None = None
        self.max_at_us: int | None = None
        self.last_event: FlightEvent | None = None
        self.held: tuple[FlightEvent, int, int] | None = None  # (event, its index, release after index)

    def publish(self, count: int) -> None:
        """Publish the timeline's next ``count`` events: one pipeline, split only where a fault goes."""
        batch: list[FlightEvent] = []
        first = self.next  # the timeline index of batch[0]
        for index in range(self.next, self.next + count):
            event = next(self.events)
            if index == self.fault_at and self.pending:
                self._flush(batch, first)
                batch = []
                if self._inject_before(event, index):
                    continue
            if not batch:
                first = index
            batch.append(event)
            if self.held is not None and index == self.held[2]:
                self._flush(batch, first)
                batch = []
                self._release()
        self._flush(batch, first)
        self.next += count

    def _flush(self, batch: list[FlightEvent], first: int) -> None:
        if not batch:
            return
        self.last_id = self._publish(batch) or self.last_id
        self.result.events += len(batch)
        self.last_event = batch[-1]
        # The batch is consecutive events of the timeline, in time order: its last is its latest.
        latest = int(self.event_at[first + len(batch) - 1])
        self.max_at_us = latest if self.max_at_us is None else max(self.max_at_us, latest)

    def _publish(self, events: list[FlightEvent]) -> str | None:
        """XADD the events, riding out a Redis restart (an event added twice then is a duplicate, counted once)."""

        def away(line: str) -> None:
            self.result.redis_outages += 1
            self.note(line)

        return through_outages(
            lambda: publish(self.client, self.key, events), "publishing the replay's events", on_outage=away
        )

    def _inject_before(self, event: FlightEvent, index: int) -> bool:
        """Inject the pending faults before the event at ``index``; True if that event is the one held back."""
        if "duplicate" in self.pending and self.last_event is not None:
            self.pending.discard("duplicate")
            entry = self._publish([self.last_event])
            self.last_id = entry or self.last_id
            self._fault(
                "duplicate",
                f"published {self.last_event.event_id} a second time, as entry {entry}, with the same fields; "
                "every consumer must count it once",
            )
        if "malformed" in self.pending and self.last_event is not None:
            self.pending.discard("malformed")
            fields = to_fields(self.last_event)
            del fields["at"]
            entry = _text(self.client.xadd(self.key, fields))  # type: ignore[arg-type]  # dict[str, str] is field data
            self.last_id = entry
            self._fault(
                "malformed",
                f"entry {entry} holds the fields of {self.last_event.event_id} without 'at'; "
                "every consumer must refuse it",
            )
        if "out-of-order" in self.pending:
            release = min(index + HELD_BACK_EVENTS, len(self.event_at) - 1)
            if release > index:  # the last event has nothing after it to be late behind
                self.pending.discard("out-of-order")
                self.held = (event, index, release)
                return True
        return False

    def _release(self) -> None:
        assert self.held is not None
        event, index, release = self.held
        self.held = None
        entry = self._publish([event])
        self.last_id = entry or self.last_id
        self.result.events += 1
        self.max_at_us = max(self.max_at_us or 0, int(self.event_at[index]))
        later = release - index
        self._fault(
            "out-of-order",
            f"held back {event.event_id} (known at {event.at.isoformat()}) and published it as entry {entry}, "
            f"after {later} events that follow it in time order",
        )

    def finish(self) -> None:
        """Release a held event and report a fault that found no place (too few events)."""
        if self.held is not None:
            self._release()
        for kind in sorted(self.pending):
            self.note(f"SIMULATED FAULT: {kind}: not injected, the timeline has too few events")

    def _fault(self, kind: str, what: str) -> None:
        line = f"SIMULATED FAULT: {kind}: {what}"
        self.result.faults[kind] += 1
        self.result.fault_notes.append(line)
        self.note(line)


class _Sender:
    """Requests to ``POST /predict`` from a few threads, at most ``in_flight`` at a time; the answers counted."""

    def __init__(
        self, http: httpx.Client, pool: ThreadPoolExecutor, in_flight: int, result: StreamReplayResult
    ) -> None:
        self.http, self.pool, self.result = http, pool, result
        self.slots = threading.BoundedSemaphore(in_flight)
        self.in_flight = in_flight
        self.lock = threading.Lock()
        self.failure = ""

    def submit(self, body: dict[str, Any], wait_id: str | None, needed_us: int | None) -> None:
        self.slots.acquire()
        self.result.requests += 1
        self.pool.submit(self._send, body, wait_id, needed_us)

    def wait(self) -> None:
        """Until every request sent has its answer."""
        for _ in range(self.in_flight):
            self.slots.acquire()
        for _ in range(self.in_flight):
            self.slots.release()

    def check(self, url: str) -> None:
        if self.failure:
            raise LabError(
                f"the API at {url} stopped answering after {self.result.answered:,} answers ({self.failure}); "
                "is `lab serve` still running?"
            )

    def _send(self, body: dict[str, Any], wait_id: str | None, needed_us: int | None) -> None:
        try:
            headers = {STREAM_WAIT_HEADER: wait_id} if wait_id else {}
            try:
                response = self.http.post("/predict", json=body, headers=headers)
            except httpx.TransportError as exc:
                with self.lock:
                    self.failure = self.failure or type(exc).__name__
                return
            with self.lock:
                self._count(body, response, wait_id, needed_us)
        finally:
            self.slots.release()

    def _count(
        self, body: dict[str, Any], response: httpx.Response, wait_id: str | None, needed_us: int | None
    ) -> None:
        result = self.result
        if response.status_code != 200:
            result.refused[response.status_code] += 1
            result.first_refusal = result.first_refusal or f"{response.status_code} {response.text[:300]}"
            return
        result.answered += 1
        try:
            answer = response.json()
        except ValueError:
            answer = None
        answer = answer if isinstance(answer, dict) else {}
        exact, caught_up = judge(answer, wait_id, needed_us)
        result.behind += not caught_up
        if result.answered % SAMPLE_EVERY == 1:
            result.samples.append({"request": body, "answer": answer})
        if exact:
            result.exact += 1
            return
        result.stale += 1
        if not result.first_stale and needed_us is not None:
            through = answer.get("events_through")
            result.first_stale = (
                f"{body['carrier']}{body['flight']} {body['origin']} {body['scheduled_departure']}: events_through "
                f"{through}, the latest event published before it {as_datetime(needed_us).isoformat()}"
            )


def judge(answer: dict[str, Any], wait_id: str | None, needed_us: int | None) -> tuple[bool, bool]:
    """Whether a 200 answer was exact, and whether its worker had applied the entry it was asked to wait for.

    Exact: its ``events_through`` is at least ``needed_us``, the latest instant of a real event
    published before the request (any answer is exact when none was). Caught up: its
    ``stream_position`` is at or after ``wait_id`` (the ``Lab-Stream-Wait`` it carried).
    """
    through = _instant_us(answer.get("events_through"))
    exact = needed_us is None or (through is not None and through >= needed_us)
    if wait_id is None:
        return exact, True
    position = answer.get("stream_position")
    try:
        caught_up = isinstance(position, str) and _entry_id(position) >= _entry_id(wait_id)
    except ValueError:
        caught_up = False
    return exact, caught_up


def _instant_us(value: object) -> int | None:
    """An ISO instant in microseconds since the epoch (None if null, unreadable or without an offset)."""
    if not isinstance(value, str):
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return micros(instant) if instant.tzinfo is not None else None


def _entry_id(text: str) -> tuple[int, int]:
    """``<ms>-<seq>`` as numbers, the order Redis gives entries (as ingestion.event_sink.parse_stream_id)."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
