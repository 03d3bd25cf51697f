"""The reference profile: fixed bins a model version's monitoring compares later months with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

from ml.profile import QUANTILES, categorical_profile, numeric_bins, numeric_profile, reference_profile


def test_numeric_bins_are_the_deciles_and_an_edge_value_falls_in_the_bin_below() -> None:
    values = np.concatenate([np.arange(1000, dtype=float), np.full(100, np.nan)])
    profile = numeric_profile(values)
    assert profile["edges"] == [99.0, 199.0, 299.0, 399.0, 499.0, 599.0, 699.0, 799.0, 899.0]
    assert profile["missing_share"] == pytest.approx(100 / 1100)
    np.testing.assert_allclose(profile["shares"], np.full(10, 100 / 1100))
    assert sum(profile["shares"]) + profile["missing_share"] == pytest.approx(1.0)
    edges = np.array(profile["edges"])
    # x <= edge: the rule a SQL `case when x <= edge` writes, so both count a month alike.
    assert numeric_bins(edges, edges).tolist() == list(range(9))
    assert numeric_bins(edges + 1e-9, edges).tolist() == list(range(1, 10))


def test_tied_deciles_merge_and_the_shares_still_cover_every_row() -> None:
    values = np.array([0.0] * 900 + [1.0] * 60 + [5.0] * 40)  # a count that is mostly zero
    profile = numeric_profile(values)
    assert profile["edges"] == [0.0]  # the 10th to 90th percentiles are all 0
    assert profile["shares"] == pytest.approx([0.9, 0.1])
    assert numeric_profile(np.full(5, np.nan))["missing_share"] == 1.0


def test_categorical_bins_are_the_most_frequent_values_then_other_unseen_missing() -> None:
    counts = {f"C{i:02d}": 30 - i for i in range(25)}  # C00 most frequent ... C24 least
    values = pd.Series([v for v, n in counts.items() for _ in range(n)] + [None] * 10, dtype=object)
    profile = categorical_profile(values.sample(frac=1.0, random_state=0), top_k=20)
    assert profile["categories"] == [f"C{i:02d}" for i in range(20)]
    rows = len(values)
    assert profile["shares"][0] == pytest.approx(30 / rows)
    assert profile["other_share"] == pytest.approx(sum(30 - i for i in range(20, 25)) / rows)
    assert profile["missing_share"] == pytest.approx(10 / rows)
    assert profile["unseen_share"] == 0.0
    total = sum(profile["shares"]) + profile["other_share"] + profile["missing_share"]
    assert total == pytest.approx(1.0)


def test_the_quantiles_give_a_later_months_wasserstein_distance_without_the_training_rows() -> None:
    rng = np.random.default_rng(0)
    reference, later = rng.normal(0, 1, 50_000), rng.normal(0.3, 1.2, 20_000)
    profile = numeric_profile(reference)
    # W1 is the mean gap between the two quantile functions; 100 mid-point quantiles stand in for them.
    estimate = np.mean(np.abs(np.quantile(later, QUANTILES) - np.array(profile["quantiles"])))
    assert estimate == pytest.approx(wasserstein_distance(reference, later), rel=0.03)


def test_a_profile_holds_every_feature_and_the_probability() -> None:
    train = pd.DataFrame({"carrier": ["AA", "B6", None, "AA"], "distance": [100.0, 200.0, np.nan, 300.0]})
    profile = reference_profile(train, ["carrier"], ["distance"], np.array([0.1, 0.2, 0.3]))
    assert set(profile["features"]) == {"carrier", "distance"}
    assert profile["features"]["carrier"]["categories"] == ["AA", "B6"]
    assert profile["probability"]["rows"] == 3 and len(profile["probability"]["quantiles"]) == 100


def test_the_profile_as_reference_table_rows() -> None:
    from ml.profile import reference_rows

    frame = pd.DataFrame(
        {
            "dest": [f"D{i % 25:02d}" for i in range(1000)] + [None] * 10,
            "distance": np.concatenate([np.arange(1000, dtype=float), np.full(10, np.nan)]),
        }
    )
    profile = reference_profile(frame, ["dest"], ["distance"], np.linspace(0, 1, 50), {"dest": 0.7, "distance": 0.3})
    rows = reference_rows(profile)
    bins = pd.DataFrame(rows["reference_bins"], columns=["feature", "bin", "kind", "label", "lower", "upper", "share"])
    distance = bins[bins.feature == "distance"]
    assert distance["kind"].tolist() == ["range"] * 10 + ["missing"]
    assert distance["lower"].iloc[0] == -np.inf and distance["upper"].iloc[9] == np.inf
    assert (distance["upper"].iloc[:9].to_numpy() == distance["lower"].iloc[1:10].to_numpy()).all()  # no gap
    assert distance["label"].iloc[0] == "<= 99" and distance["label"].iloc[9] == "> 899"
    for feature in ("dest", "distance", "probability"):
        assert bins[bins.feature == feature]["share"].sum() == pytest.approx(1.0), feature
    dest = bins[bins.feature == "dest"]
    assert dest["kind"].tolist() == ["category"] * 20 + ["other", "unseen", "missing"]
    # Every training category maps to a bin: its own, or `other` (index 20) for the rest.
    categories = dict((c, b) for f, c, b in rows["reference_categories"] if f == "dest")
    assert len(categories) == 25 and sorted(b for b in categories.values() if b == 20) == [20] * 5
    importance = {f: i for f, _, _, _, _, i in rows["reference_features"]}
    assert importance == {"dest": 0.7, "distance": 0.3, "probability": None}
    assert len([r for r in rows["reference_quantiles"] if r[0] == "distance"]) == 100
