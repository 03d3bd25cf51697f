"""The dbt project on both targets: builds, parity, correctness, incremental runs, docs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest

from core.settings import Settings
from tests.helpers.fingerprints import fingerprint
from tests.helpers.source_csv import raw_flights
from warehouse.dbt import mart_relations, run_dbt, target_dir
from warehouse.query import query

pytestmark = pytest.mark.slow


def _ok(settings: Settings) -> dict[str, int]:
    # The session fixture kept the build's results (later dbt commands overwrite run_results.json).
    results = json.loads((target_dir(settings) / "build_results.json").read_text())["results"]
    bad = [r["unique_id"] for r in results if r["status"] not in {"success", "pass", "no-op"}]
    assert not bad, bad
    kinds: dict[str, int] = {}
    for r in results:
        kind = r["unique_id"].split(".")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def test_build_passes_on_duckdb(duckdb_built: Settings) -> None:
    kinds = _ok(duckdb_built)
    assert kinds["model"] >= 14 and kinds["test"] >= 50 and kinds["unit_test"] == 2


@pytest.mark.integration
def test_build_passes_on_postgres(postgres_built: Settings) -> None:
    kinds = _ok(postgres_built)
    assert kinds["model"] >= 14 and kinds["test"] >= 50 and kinds["unit_test"] == 2


def test_source_freshness_passes(duckdb_built: Settings) -> None:
    result = run_dbt(duckdb_built, ["source", "freshness"])
    assert result.count("source", "pass") == 5


@pytest.mark.integration
def test_marts_hold_the_same_rows_on_both_targets(duckdb_built: Settings, postgres_built: Settings) -> None:
    marts = mart_relations(duckdb_built)
    assert set(marts) == set(mart_relations(postgres_built))
    assert len(marts) == 6
    for name in marts:
        on_duckdb = fingerprint(query(duckdb_built, f"select * from {mart_relations(duckdb_built)[name]}"))
        on_postgres = fingerprint(query(postgres_built, f"select * from {mart_relations(postgres_built)[name]}"))
        assert on_duckdb == on_postgres, name


@pytest.mark.integration
def test_a_monthly_run_on_postgres_keeps_the_contracted_types(postgres_built: Settings) -> None:
    """An incremental month on Postgres passes on_schema_change='fail' and leaves the mart as it was.

    Postgres's md5 and to_char return text where the contract declares varchar: the full
    build took the contract's types, and each monthly run then failed its schema check.
    """
    mart = mart_relations(postgres_built)["training_flights"]
    before = fingerprint(query(postgres_built, f"select * from {mart}"))
    run_dbt(postgres_built, ["run", "--select", "training_flights"], month="2013-03")
    assert fingerprint(query(postgres_built, f"select * from {mart}")) == before


def test_training_mart_matches_the_raw_csv(duckdb_built: Settings) -> None:
    raw = raw_flights()
    assert raw.num_rows == 336_776
    cancelled = pc.is_null(raw.column("dep_time"))
    assert pc.sum(cancelled).as_py() == 8_255
    operated = raw.filter(pc.invert(cancelled))
    expected_label_rate = pc.mean(pc.greater(operated.column("dep_delay"), duckdb_built.late_departure_minutes)).as_py()
    expected_by_carrier = {
        row["carrier"]: row["dep_delay_mean"]
        for row in operated.group_by("carrier").aggregate([("dep_delay", "mean")]).to_pylist()
    }

    mart = mart_relations(duckdb_built)["training_flights"]
    stats = query(
        duckdb_built,
        f"select count(*) as n, avg(case when is_departure_delayed then 1.0 else 0.0 end) as rate from {mart}",
    ).to_pylist()[0]
    assert stats["n"] == 336_776 - 8_255
    assert stats["rate"] == pytest.approx(expected_label_rate, abs=1e-12)
    assert 0.20 < stats["rate"] < 0.23  # about 21% of flights leave late
    by_carrier = {
        row["carrier"]: row["mean_delay"]
        for row in query(
            duckdb_built, f"select carrier, avg(departure_delay_minutes) as mean_delay from {mart} group by carrier"
        ).to_pylist()
    }
    assert by_carrier.keys() == expected_by_carrier.keys()
    for carrier, mean in expected_by_carrier.items():
        assert by_carrier[carrier] == pytest.approx(mean, abs=1e-9), carrier


def test_no_feature_comes_from_after_the_prediction(duckdb_built: Settings) -> None:
    """Independent of the singular dbt test: check the timestamps the mart carries."""
    mart = mart_relations(duckdb_built)["training_flights"]
    horizon = duckdb_built.prediction_horizon_minutes
    leaks = query(
        duckdb_built,
        f"""
        select count(*) as n from {mart}
        where predicted_at != scheduled_departure_at - interval '{horizon} minutes'
            or prediction_horizon_minutes != {horizon}
            or weather_observed_at >= predicted_at
            or plane_previous_departure_at >= predicted_at
        """,
    ).to_pylist()[0]["n"]
    assert leaks == 0
    covered = query(
        duckdb_built,
        f"""
        select count(weather_observed_at) * 1.0 / count(*) as weather,
            count(plane_previous_departure_at) * 1.0 / count(*) as plane
        from {mart}
        """,
    ).to_pylist()[0]
    assert covered["weather"] > 0.99  # the look-back finds weather for nearly every flight
    assert covered["plane"] > 0.9  # and most planes have flown before


def test_monthly_incremental_run_equals_full_build(duckdb_built: Settings, tmp_path: Path) -> None:
    # Work on a copy of the built warehouse: the session's stays untouched.
    copy = tmp_path / "warehouse.duckdb"
    assert duckdb_built.duckdb_path is not None
    shutil.copy(duckdb_built.duckdb_path, copy)
    settings = duckdb_built.model_copy(update={"home": tmp_path / ".lab", "duckdb_path": copy})
    run_dbt(settings, ["build", "--select", "training_flights", "--exclude", "test_type:unit"])
    marts = mart_relations(settings)
    before = {m: fingerprint(query(settings, f"select * from {marts[m]}")) for m in marts}

    # Lose February and March from the incremental marts, then replay March alone: March comes
    # back, February stays lost (the run touched its month only), then February by the `month` var.
    import duckdb

    def rows(month: str) -> int:
        sql = f"select count(*) as n from {marts['training_flights']} where flight_month = '{month}'"
        return int(query(settings, sql).to_pylist()[0]["n"])

    february, march = rows("2013-02"), rows("2013-03")
    with duckdb.connect(str(copy)) as conn:
        conn.execute(f"delete from {marts['training_flights']} where flight_month in ('2013-02', '2013-03')")
    run_dbt(settings, ["run", "--select", "training_flights"], month="2013-03")
    assert (rows("2013-02"), rows("2013-03")) == (0, march) and february > 0
    run_dbt(settings, ["run", "--select", "training_flights", "--vars", '{"month": "2013-02"}'])
    after = {m: fingerprint(query(settings, f"select * from {marts[m]}")) for m in marts}
    assert after == before

    run_dbt(settings, ["run", "--full-refresh", "--select", "+training_flights"])
    refreshed = {m: fingerprint(query(settings, f"select * from {marts[m]}")) for m in marts}
    assert refreshed == before


def _upstream(manifest: dict[str, Any], node: str) -> set[str]:
    """Every node ``node`` reads, directly or through others (dbt's parent map, walked)."""
    parents, upstream, frontier = manifest["parent_map"], set(), [node]
    while frontier:
        for parent in parents.get(frontier.pop(), []):
            if parent not in upstream:
                upstream.add(parent)
                frontier.append(parent)
    return upstream


def test_lineage_runs_from_raw_to_the_api(duckdb_built: Settings) -> None:
    manifest = json.loads((target_dir(duckdb_built) / "manifest.json").read_text())
    api = manifest["exposures"]["exposure.lab.prediction_api"]
    model = manifest["exposures"]["exposure.lab.flight_delay_model"]
    assert "model.lab.training_flights" in model["depends_on"]["nodes"]
    assert "model.lab.online_flight_outcomes" in api["depends_on"]["nodes"]
    upstream = _upstream(manifest, "model.lab.training_flights")
    assert {f"source.lab.nycflights.{t}" for t in ("flights", "weather", "planes")} <= upstream


def test_docs_site_renders_the_lineage_graph(duckdb_built: Settings, tmp_path: Path) -> None:
    from warehouse.docs import lineage_url, render

    run_dbt(duckdb_built, ["docs", "generate", "--static"])
    site = target_dir(duckdb_built) / "static_index.html"
    assert site.stat().st_size > 100_000
    screenshot = tmp_path / "lineage.png"
    dom = render(lineage_url(site, "model.lab.training_flights"), screenshot)
    assert "Lineage Graph" in dom
    assert dom.count("<canvas") >= 3  # cytoscape draws the graph on its canvas layers
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 30_000  # a drawn graph, not a blank page
    # Keep the picture where a person can look at it after the run.
    shutil.copy(screenshot, duckdb_built.home / "lineage.png")


def test_lineage_runs_from_the_predictions_to_the_monitoring_report(duckdb_built: Settings) -> None:
    manifest = json.loads((target_dir(duckdb_built) / "manifest.json").read_text())
    upstream = _upstream(manifest, "exposure.lab.monitoring_report")
    assert {"source.lab.lab_api.predictions", "source.lab.model_reference.reference_bins"} <= upstream
    assert "source.lab.nycflights.flights" in upstream  # the outcomes the live performance is measured on
    monitoring = {uid for uid, node in manifest["nodes"].items() if "monitoring" in node.get("tags", [])}
    models = ("mon_feature_drift", "mon_performance", "stg_lab_api__predictions")
    assert {f"model.lab.{m}" for m in models} <= monitoring
