"""Online features kept current by flight events (issue 26): applying an outcome equals having had it in the batch.

The unit tests hold ``Outcomes`` and ``PlaneDepartures`` with a tail (in order, out of
order, equal instants) to a brute force over every outcome. The slow tests split the
bundled year at an instant T: the batch of everything, and the batch of what was known
before T with every later outcome applied as an event, must assemble the same features
for thousands of flights after T; in time order, shuffled, or each event twice. The
stale batch alone does not, which shows the comparison can fail.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from core.settings import Settings
from ingestion.events import FlightEvent
from serving.features import SAME_DAY_COLUMNS, OnlineFeatures, Outcomes, PlaneDepartures
from serving.schemas import FlightRequest
from tests.helpers.features import event_of_row
from warehouse.online import read_current

SPLIT = datetime(2013, 6, 15, 12, tzinfo=UTC)
REQUESTS = 3000
SEED = 26
_TAILNUM = re.compile(r"^[A-Z0-9]{2,8}$")


# --- the index, against a brute force ---------------------------------------------------------


def _batch(rows: list[tuple[int, int, float]]) -> Outcomes:
    """The batch index of ``rows`` (known at, late, delay), as ``from_tables`` builds it."""
    ordered = sorted(rows, key=lambda r: r[0])
    known = np.array([r[0] for r in ordered], dtype=np.int64)
    late = np.zeros(len(ordered) + 1, dtype=np.int64)
    np.cumsum([r[1] for r in ordered], dtype=np.int64, out=late[1:])
    delay = np.zeros(len(ordered) + 1, dtype=np.float64)
    np.cumsum([r[2] for r in ordered], dtype=np.float64, out=delay[1:])
    return Outcomes(known, late, delay)


def _brute(rows: list[tuple[int, int, float]], start: int, end: int) -> tuple[int, int, float]:
    inside = [r for r in rows if start <= r[0] < end]
    return len(inside), sum(r[1] for r in inside), sum(r[2] for r in inside)


@pytest.mark.parametrize("seed", range(8))
def test_outcomes_with_a_tail_count_what_a_brute_force_counts(seed: int) -> None:
    """Batch + tail, appended in order, out of order and at equal instants, windows like a scan of every row."""
    rng = random.Random(seed)
    # Few distinct instants, so equal timestamps are common (within the batch, the tail and across both).
    instants = 60
    batch_rows = [
        (rng.randrange(instants), rng.randint(0, 1), float(rng.randint(-10, 90))) for _ in range(rng.randint(0, 40))
    ]
    outcomes = _batch(batch_rows)
    rows = list(batch_rows)
    # Events mostly after the batch, some late (before the tail's end, or even before the batch's end).
    for step in range(rng.randint(1, 200)):
        at = (
            rng.randrange(instants // 2 + step // 4, instants + step // 2)
            if rng.random() < 0.7
            else rng.randrange(instants)
        )
        row = (at, rng.randint(0, 1), float(rng.randint(-10, 90)))
        outcomes.append(*row)
        rows.append(row)
        if rng.random() < 0.2:  # a query between appends merges what is pending
            start, end = sorted(rng.randrange(-2, instants + 110) for _ in range(2))
            assert outcomes.window(start, end) == _brute(rows, start, end)
    for _ in range(300):
        start, end = sorted(rng.randrange(-2, instants + 110) for _ in range(2))
        assert outcomes.window(start, end) == _brute(rows, start, end)
        assert outcomes.count(start, end) == _brute(rows, start, end)[0]
        assert outcomes.window(end, end) == (0, 0, 0.0)


def test_a_tail_that_follows_the_batch_sums_as_the_batch_of_everything() -> None:
    """Non-integer delays: the tail's sums continue the batch's, so a window across both is bit-identical."""
    rng = random.Random(1)
    rows = [(i, rng.randint(0, 1), rng.uniform(-5, 60)) for i in range(400)]
    everything = _batch(rows)
    split = _batch(rows[:250])
    for row in rows[250:]:
        split.append(*row)
    for _ in range(500):
        start, end = sorted(rng.randrange(-1, 402) for _ in range(2))
        assert split.window(start, end) == everything.window(start, end)


@pytest.mark.parametrize("seed", range(6))
def test_plane_departures_with_a_tail_find_the_latest_like_a_brute_force(seed: int) -> None:
    """The last departure before an instant, of simultaneous ones the largest delay (unknown smallest)."""
    rng = random.Random(seed)

    def delay() -> float:
        return float("nan") if rng.random() < 0.2 else float(rng.randint(-5, 30))

    def rank(row: tuple[int, float]) -> tuple[int, float]:
        return row[0], -float("inf") if np.isnan(row[1]) else row[1]

    batch_rows = sorted(((rng.randrange(30), delay()) for _ in range(rng.randint(0, 20))), key=rank)
    plane = PlaneDepartures(
        np.array([r[0] for r in batch_rows], dtype=np.int64), np.array([r[1] for r in batch_rows], dtype=np.float64)
    )
    rows = list(batch_rows)
    for _ in range(rng.randint(1, 60)):
        row = (rng.randrange(50), delay())
        plane.append(*row)
        rows.append(row)
        for end in rng.sample(range(-1, 52), 3):
            before = [r for r in rows if r[0] < end]
            found = plane.latest_before(end)
            if not before:
                assert found is None
                continue
            best = max(before, key=rank)
            assert found is not None and found[0] == best[0]
            assert (found[1] is None) if np.isnan(best[1]) else found[1] == best[1]


# --- the bundled year, split at T ------------------------------------------------------------


@pytest.fixture(scope="module")
def split_year(duckdb_built: Settings) -> dict[str, Any]:
    """The published tables; the outcomes known from T on as events (in time order); requests after T."""
    settings = duckdb_built
    tables = dict(read_current(settings).tables)
    outcomes = tables["online_flight_outcomes"]
    # Known from T on (a row without a known instant is in no index, the batch before T keeps it).
    from_split = pc.fill_null(
        pc.greater_equal(outcomes["outcome_known_at"], pa.scalar(SPLIT, pa.timestamp("us", tz="UTC"))), False
    )
    later = outcomes.filter(from_split).sort_by([("outcome_known_at", "ascending"), ("flight_id", "ascending")])
    events = [event_of_row(row) for row in later.to_pylist()]
    stale_tables = {**tables, "online_flight_outcomes": outcomes.filter(pc.invert(from_split))}
    everything = OnlineFeatures.from_tables(
        "all", tables, settings.prediction_horizon_minutes, late_departure_minutes=settings.late_departure_minutes
    )

    horizon = timedelta(minutes=settings.prediction_horizon_minutes)
    candidates = [
        row
        for row in outcomes.to_pylist()
        if row["scheduled_departure_at"] is not None
        and row["scheduled_departure_at"] - horizon > SPLIT
        and (row["tailnum"] is None or _TAILNUM.match(row["tailnum"]))
    ]
    chosen = random.Random(SEED).sample(candidates, REQUESTS)
    requests = []
    for row in chosen:
        zone = ZoneInfo(everything.airports[row["origin"]] or "UTC")
        local = row["scheduled_departure_at"].astimezone(zone).replace(tzinfo=None)
        requests.append(
            FlightRequest(
                carrier=row["carrier"],
                flight=1,
                tailnum=row["tailnum"],
                origin=row["origin"],
                dest=row["dest"],
                scheduled_departure=local,
            )
        )
    return {
        "settings": settings,
        "stale_tables": stale_tables,
        "events": events,
        "everything": everything,
        "expected": [everything.assemble(r)[0] for r in requests],
        "requests": requests,
    }


def _stale(split: dict[str, Any]) -> OnlineFeatures:
    settings: Settings = split["settings"]
    return OnlineFeatures.from_tables(
        "before", split["stale_tables"], settings.prediction_horizon_minutes, settings.late_departure_minutes
    )


def _differing(features: OnlineFeatures, split: dict[str, Any]) -> list[tuple[int, str, Any, Any]]:
    """(request, feature, got, expected) of every feature that is not the batch of everything's."""
    found = []
    for i, (request, expected) in enumerate(zip(split["requests"], split["expected"], strict=True)):
        got = features.assemble(request)[0]
        found += [(i, name, got[name], expected[name]) for name in expected if got[name] != expected[name]]
    return found


@pytest.mark.slow
def test_applying_the_later_outcomes_in_time_order_equals_the_batch_of_everything(split_year: dict[str, Any]) -> None:
    features = _stale(split_year)
    events: list[FlightEvent] = split_year["events"]
    assert len(events) > 100_000
    assert all(features.apply(event) for event in events)
    assert _differing(features, split_year) == []
    assert features.carriers == split_year["everything"].carriers
    assert features.events_through == max(event.at for event in events)


@pytest.mark.slow
def test_applying_them_shuffled_equals_the_batch_of_everything(split_year: dict[str, Any]) -> None:
    """Late events (any order at all, queries in between) end up where the batch has them."""
    features = _stale(split_year)
    events: list[FlightEvent] = list(split_year["events"])
    random.Random(SEED).shuffle(events)
    requests: list[FlightRequest] = split_year["requests"]
    for i, event in enumerate(events):
        assert features.apply(event)
        if i % 5000 == 0:  # a query in between merges what is pending
            features.assemble(requests[i % len(requests)])
    assert _differing(features, split_year) == []
    assert features.events_through == max(event.at for event in events)


@pytest.mark.slow
def test_an_event_applied_twice_counts_once(split_year: dict[str, Any]) -> None:
    features = _stale(split_year)
    events: list[FlightEvent] = split_year["events"]
    assert features.events_through is not None and features.events_through < SPLIT  # the batch's latest
    assert all(features.apply(event) for event in events)
    through = features.events_through
    assert not any(features.apply(event) for event in events)
    # A redelivery in the middle of the stream, and an equal event built anew, are duplicates too.
    again = FlightEvent(**{name: getattr(events[0], name) for name in FlightEvent.__dataclass_fields__})
    assert not features.apply(again)
    assert features.events_through == through
    assert _differing(features, split_year) == []


@pytest.mark.slow
def test_an_event_the_batch_counts_is_not_counted_again(split_year: dict[str, Any]) -> None:
    """Where batch and stream overlap (a month's file landed after its events), the batch's row counts once.

    The broken variant, the same features without the batch's event ids, counts every
    overlapping event twice, and its features are not the batch's.
    """
    events: list[FlightEvent] = split_year["events"]
    settings: Settings = split_year["settings"]
    tables = read_current(settings).tables
    whole = OnlineFeatures.from_tables(
        "all", tables, settings.prediction_horizon_minutes, settings.late_departure_minutes
    )
    assert len(whole.batch_event_hashes) == tables["online_flight_outcomes"].num_rows
    assert not any(whole.apply(event) for event in events)
    assert _differing(whole, split_year) == []

    broken = OnlineFeatures.from_tables(
        "all", tables, settings.prediction_horizon_minutes, settings.late_departure_minutes
    )
    broken.batch_event_hashes = broken.batch_event_hashes[:0]
    assert all(broken.apply(event) for event in events)
    assert len({i for i, *_ in _differing(broken, split_year)}) > REQUESTS // 2


@pytest.mark.slow
def test_the_stale_batch_alone_differs(split_year: dict[str, Any]) -> None:
    """Without the events the same-day features are not the batch of everything's: the parity tests can fail."""
    found = _differing(_stale(split_year), split_year)
    requests = {i for i, *_ in found}
    assert len(requests) > REQUESTS // 2
    assert set(SAME_DAY_COLUMNS) <= {name for _, name, *_ in found}


@pytest.mark.slow
def test_the_stream_of_the_raw_flights_gives_the_batch_of_everything(split_year: dict[str, Any]) -> None:
    """The events a replay sends (``events_from_flights`` on the lake's flights, real ids) from T on: parity too."""
    from ingestion.events import events_from_flights, iter_events
    from ingestion.storage import open_catalog

    settings: Settings = split_year["settings"]
    flights = open_catalog(settings).load_table(f"{settings.raw_namespace}.flights").scan().to_arrow()
    timeline = events_from_flights(flights)
    timeline = timeline.filter(pc.greater_equal(timeline["at"], pa.scalar(SPLIT, timeline.schema.field("at").type)))
    features = _stale(split_year)
    events = list(iter_events(timeline))
    assert len(events) == len(split_year["events"])
    assert all(features.apply(event) for event in events)
    assert _differing(features, split_year) == []
    assert features.events_through == max(event.at for event in events)
