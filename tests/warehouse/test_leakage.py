"""The leakage test of issue 14: the mart's as-of features against an independent recomputation from the raw lake.

tests/helpers/asof_reference.py recomputes every as-of feature of a seeded sample of flights from the raw Iceberg
tables, one flight at a time, sharing nothing with the models. The sample is random flights plus flights
chosen where a leak would bite. The same check is then run on deliberately leaky copies of the dbt project,
and must catch each leak in the features it touches: a check that never fails proves nothing.

Cost: the recomputation takes a few seconds; each leaky variant rebuilds only the models its edit touches and
the mart, on a copy of the session's warehouse (tens of seconds each).
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.settings import Settings
from tests.helpers.asof_reference import (
    COMPARED,
    WEATHER_VALUES,
    AsOfReference,
    Mismatch,
    compare,
    departed_after_local_midnight,
    raw_tables,
    utc_instants,
)
from warehouse.dbt import mart_relations, run_dbt
from warehouse.query import query

pytestmark = pytest.mark.slow

SEED = 14
RANDOM_FLIGHTS = 400
PER_CASE = 30


@pytest.fixture(scope="module")
def reference(lake_settings: Settings, duckdb_built: Settings) -> AsOfReference:
    flights, weather = raw_tables(lake_settings)
    return AsOfReference(
        flights,
        weather,
        horizon_minutes=duckdb_built.prediction_horizon_minutes,
        late_minutes=duckdb_built.late_departure_minutes,
    )


def _pick(rng: random.Random, candidates: pd.Index, k: int) -> list[str]:
    ids = sorted(candidates)
    return rng.sample(ids, min(k, len(ids)))


def flights_to_check(ref: AsOfReference) -> dict[str, list[str]]:
    """Case -> flight ids: a seeded random sample of operated flights, and flights chosen where leaks bite."""
    rng = random.Random(SEED)
    f = ref.flights
    operated = f[~f["is_cancelled"]]
    predicted_at = operated["scheduled_at"] - ref.horizon

    # The next flight of a plane whose previous departure slipped past local midnight (the 1,236 of the
    # issue): a by-day history, or a plane feature keyed on the scheduled day, sees that delay too early.
    by_plane = operated[operated["tailnum"].notna()].sort_values(["tailnum", "scheduled_at"])
    next_of_plane = by_plane.index.to_series().groupby(by_plane["tailnum"]).shift(-1)
    slipped = departed_after_local_midnight(by_plane)
    after_midnight = pd.Index(next_of_plane[slipped].dropna())

    # Flights predicted at, or up to 30 minutes after, a cancellation's scheduled time at their origin.
    cancelled = f[f["is_cancelled"]]
    at_cancel, after_cancel = [], []
    for origin, times in cancelled.groupby("origin")["scheduled_at"]:
        instants = np.sort(utc_instants(times))
        mine = predicted_at[operated["origin"] == origin]
        p = utc_instants(mine)
        last = np.searchsorted(instants, p, side="right") - 1  # the latest cancellation at or before P
        gap = p - instants[np.clip(last, 0, None)]
        known = last >= 0
        at_cancel += list(mine.index[known & (gap == np.timedelta64(0))])
        after_cancel += list(mine.index[known & (gap > np.timedelta64(0)) & (gap <= np.timedelta64(30, "m"))])

    # Flights predicted at the very instant another flight left their origin: a window that includes its
    # current instant counts that departure.
    at_a_departure = []
    for _origin, rows in operated.groupby("origin"):
        at = np.isin(utc_instants(rows["scheduled_at"]) - ref.horizon, utc_instants(rows["known_at"]))
        at_a_departure += list(rows.index[at])

    first_days = operated.index[[d.day <= 2 for d in operated["local_date"]]]
    return {
        "random": _pick(rng, operated.index, RANDOM_FLIGHTS),
        "after_a_plane_left_past_midnight": _pick(rng, after_midnight, PER_CASE),
        "predicted_at_a_cancellation": _pick(rng, pd.Index(at_cancel), PER_CASE),
        "predicted_just_after_a_cancellation": _pick(rng, pd.Index(after_cancel), PER_CASE),
        "predicted_as_a_flight_leaves": _pick(rng, pd.Index(at_a_departure), PER_CASE),
        "first_days_of_month": _pick(rng, first_days, PER_CASE),
    }


@pytest.fixture(scope="module")
def cases(reference: AsOfReference) -> dict[str, list[str]]:
    return flights_to_check(reference)


@pytest.fixture(scope="module")
def expected(reference: AsOfReference, cases: dict[str, list[str]]) -> dict[str, dict[str, object]]:
    """flight_id -> its as-of features, recomputed from the raw lake."""
    return reference.table(sorted({fid for ids in cases.values() for fid in ids}))


def mart_rows(settings: Settings, flight_ids: list[str]) -> list[dict[str, object]]:
    mart = mart_relations(settings)["training_flights"]
    wanted = ", ".join(f"'{fid}'" for fid in flight_ids)
    columns = ", ".join(COMPARED)
    return query(settings, f"select flight_id, {columns} from {mart} where flight_id in ({wanted})").to_pylist()


def describe(mismatches: list[Mismatch], limit: int = 12) -> str:
    counts = Counter(m.column for m in mismatches)
    lines = [f"{len(mismatches)} mismatches by column: {dict(counts.most_common())}"]
    lines += [f"  {m.flight_id} {m.column}: expected {m.expected!r}, mart {m.actual!r}" for m in mismatches[:limit]]
    return "\n".join(lines)


def test_mart_features_equal_an_independent_recomputation(
    duckdb_built: Settings,
    cases: dict[str, list[str]],
    expected: dict[str, dict[str, object]],
) -> None:
    assert len(cases["random"]) == RANDOM_FLIGHTS
    for name, ids in cases.items():
        assert len(ids) >= PER_CASE, f"too few flights where a leak would bite: {name}"
    # The chosen flights do sit on the edges they were chosen for, in the reference too.
    for fid in cases["predicted_just_after_a_cancellation"]:
        assert expected[fid]["origin_cancellations_3h"] > 0, fid  # type: ignore[operator]

    mismatches = compare(expected, mart_rows(duckdb_built, sorted(expected)))
    assert not mismatches, describe(mismatches)


@dataclass(frozen=True)
class Leak:
    """A textual edit of the lead's SQL that makes features see the future, and the features it must spoil."""

    name: str
    edits: tuple[tuple[str, str, str], ...]  # (file under dbt_project/, text, replacement)
    models: str  # what to rebuild on the copy, the mart included
    caught: frozenset[str]  # the check must report mismatches in each of these
    touched: frozenset[str]  # and in nothing outside these


HISTORY = frozenset(
    {
        "route_flights_window",
        "route_late_share",
        "route_mean_delay_minutes",
        "carrier_flights_window",
        "carrier_late_share",
        "carrier_mean_delay_minutes",
        "route_carrier_flights_window",
        "route_carrier_late_share",
    }
)
ORIGIN = frozenset({"origin_departures_2h", "origin_late_share_2h", "origin_mean_delay_minutes_2h"})
PLANE = frozenset({"plane_previous_delay_minutes", "plane_previous_departure_age_hours"})
WEATHER = frozenset({"weather_observed_at", "weather_age_hours", *WEATHER_VALUES.values()})

LEAKS = [
    # Issue 14's leak: an outcome counted from its scheduled time, before its delay was known.
    Leak(
        name="outcomes_known_at_scheduled_time",
        edits=(
            (
                "models/intermediate/int_flight_outcomes.sql",
                "coalesce(actual_departure_at, scheduled_departure_at) as outcome_known_at",
                "scheduled_departure_at as outcome_known_at",
            ),
        ),
        models="int_flight_outcomes int_flights_known_before_prediction training_flights",
        caught=HISTORY | ORIGIN | PLANE,
        touched=HISTORY | ORIGIN | PLANE,
    ),
    # Every window closed at the prediction instant instead of open: what happens at P counts, and the
    # weather observed at P is used.
    Leak(
        name="windows_include_the_instant",
        edits=(
            (
                "models/intermediate/int_flights_known_before_prediction.sql",
                "\"interval '1 microsecond' preceding\"",
                '"current row"',
            ),
            ("models/intermediate/int_flights_joined_to_weather.sql", "- 1) / 60.0", ") / 60.0"),
        ),
        models="int_flights_known_before_prediction int_flights_joined_to_weather training_flights",
        caught=ORIGIN | {"origin_cancellations_3h"} | WEATHER,
        touched=HISTORY | ORIGIN | {"origin_cancellations_3h"} | PLANE | WEATHER,
    ),
]


def build_leaky_copy(built: Settings, leak: Leak, workdir: Path) -> Settings:
    """The dbt project copied and edited, rebuilt on a copy of the built warehouse; the session's stay untouched."""
    project = workdir / "dbt_project"
    shutil.copytree(built.dbt_project_dir, project, ignore=shutil.ignore_patterns("target", "dbt_packages", "logs"))
    for path, text, replacement in leak.edits:
        sql = (project / path).read_text()
        # Fails loudly when the models change shape, rather than testing an edit that no longer applies.
        assert sql.count(text) == 1, f"{path} no longer holds {text!r} once: re-aim the leak {leak.name}"
        (project / path).write_text(sql.replace(text, replacement))
    assert built.duckdb_path is not None
    warehouse = workdir / "warehouse.duckdb"  # the same file name: DuckDB's views name their catalog after it
    shutil.copy(built.duckdb_path, warehouse)
    settings = built.model_copy(update={"home": workdir / ".lab", "duckdb_path": warehouse, "dbt_project_dir": project})
    run_dbt(settings, ["run", "--full-refresh", "--select", leak.models])
    return settings


@pytest.mark.parametrize("leak", LEAKS, ids=lambda leak: leak.name)
def test_the_check_catches_a_leaky_variant(
    leak: Leak,
    duckdb_built: Settings,
    expected: dict[str, dict[str, object]],
    tmp_path: Path,
) -> None:
    leaky = build_leaky_copy(duckdb_built, leak, tmp_path)
    mismatches = compare(expected, mart_rows(leaky, sorted(expected)))
    spoiled = Counter(m.column for m in mismatches)
    assert leak.caught <= spoiled.keys() <= leak.touched, describe(mismatches)
