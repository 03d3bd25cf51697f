"""The reference profile a model version carries: fixed bins its monitoring compares every later month with.

Computed once, when the model is trained, and logged with its run
(``monitoring/reference_profile.json``), so the bins never move: a month's
population stability index is comparable with the next month's, and promoting
a model switches the reference with it.

- A numeric feature: its deciles on the training window as bin edges (ties
  merged), the share of rows in each bin, the share missing, its standard
  deviation, and 100 quantiles (at 0.5 %, 1.5 %, … 99.5 %) from which a later
  month's Wasserstein distance is computed without the training rows.
- A categorical feature: its ``TOP_K`` most frequent values, their shares, the
  share of all other known values (``other``, listed so a later value can be
  told apart from one never seen), a bin for values the training window never
  saw (``unseen``, empty by definition here) and the share missing.
- The probability: as a numeric feature, on the validation window: scores on
  the rows the model was fitted to would be sharper than any it will serve.

Bin ``i`` of a numeric feature holds ``edges[i-1] < x <= edges[i]`` (the first
everything up to ``edges[0]``, the last everything above ``edges[-1]``), the
same ``x <= edge`` rule SQL ``case`` expressions write.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

ARTIFACT = "monitoring/reference_profile.json"
TOP_K = 20
DECILES = np.arange(1, 10) / 10  # 0.3, not linspace's 0.30000000000000004: an edge may sit on a tie
QUANTILES = (np.arange(100) + 0.5) / 100
PROBABILITY = "probability"


def numeric_profile(values: pd.Series | np.ndarray) -> dict[str, Any]:
    """Decile bins, their shares, the missing share, std and 100 quantiles of one numeric column."""
    x = np.asarray(values, dtype=np.float64)
    present = np.sort(x[~np.isnan(x)])  # sorted once: every cut below is an index into it
    n = len(present)
    if n == 0:
        return {"kind": "numeric", "rows": len(x), "edges": [], "shares": [], "missing_share": 1.0}
    # Observed values as edges (the inverse of the empirical CDF), never a point between two:
    # a count that is mostly zero gets the edge 0, not 0.1.
    edges = np.unique(present[np.ceil(DECILES * n).astype(int) - 1])
    at_or_below = np.searchsorted(present, edges, side="right")  # rows <= each edge
    counts = np.diff(at_or_below, prepend=0, append=n)
    return {
        "kind": "numeric",
        "rows": len(x),
        "edges": edges.tolist(),
        "shares": (counts / len(x)).tolist(),
        "missing_share": float(1 - n / len(x)),
        "std": float(present.std()),
        # Linear interpolation between the order statistics (numpy's default quantile).
        "quantiles": np.interp(QUANTILES * (n - 1), np.arange(n), present).tolist(),
    }


def numeric_bins(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each (non-missing) value: how many edges lie strictly below it."""
    return np.searchsorted(edges, x, side="left")


def categorical_profile(values: pd.Series, top_k: int = TOP_K) -> dict[str, Any]:
    """The ``top_k`` most frequent values and their shares, then ``other``, ``unseen`` and missing."""
    rows = len(values)
    counts = values.dropna().astype(str).value_counts(sort=False)
    # Most frequent first; equal counts by value, so the same rows give the same bins.
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = ordered[:top_k]
    known = int(counts.sum())
    return {
        "kind": "categorical",
        "rows": rows,
        "categories": [value for value, _ in top],
        "shares": [count / rows for _, count in top],
        "other_share": (known - sum(count for _, count in top)) / rows if rows else 0.0,
        "other_categories": sorted(value for value, _ in ordered[top_k:]),
        "unseen_share": 0.0,
        "missing_share": 1 - known / rows if rows else 0.0,
    }


def reference_profile(
    train: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    validation_proba: np.ndarray,
    importance: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every feature's profile on the training rows, and the probability's on the validation window.

    ``importance`` (feature -> share, summing to 1) is what the model relies on:
    the retrain rule weighs a drifting feature by it.
    """
    features: dict[str, Any] = {name: categorical_profile(train[name]) for name in categorical}
    features |= {name: numeric_profile(train[name]) for name in numeric}
    for name, profile in features.items():
        profile["importance"] = None if importance is None else float(importance.get(name, 0.0))
    return {"features": features, PROBABILITY: numeric_profile(validation_proba)}


def _edge(value: float) -> str:
    return f"{value:.6g}"


def reference_rows(profile: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """The profile as the rows of the warehouse's reference tables (``warehouse.reference``), per table.

    Bins are numbered in display order; a numeric bin ``i`` holds
    ``lower_edge < x <= upper_edge`` with infinite outer edges, and every
    feature ends with its ``missing`` bin.
    """
    rows: dict[str, list[tuple[Any, ...]]] = {
        "reference_features": [],
        "reference_bins": [],
        "reference_categories": [],
        "reference_quantiles": [],
    }
    profiles = {**profile["features"], PROBABILITY: profile[PROBABILITY]}
    for name, feature in profiles.items():
        kind = feature["kind"]
        rows["reference_features"].append(
            (name, kind, feature["rows"], feature["missing_share"], feature.get("std"), feature.get("importance"))
        )
        bins: list[tuple[Any, ...]] = []  # (kind, label, lower, upper, share)
        if kind == "numeric":
            bounds = [-np.inf, *feature["edges"], np.inf]
            for i, share in enumerate(feature["shares"] or [0.0]):  # no value at all: one empty bin
                lower, upper = bounds[i], bounds[i + 1]
                label = (
                    f"<= {_edge(upper)}"
                    if i == 0
                    else f"> {_edge(lower)}"
                    if np.isinf(upper)
                    else f"({_edge(lower)}, {_edge(upper)}]"
                )
                bins.append(("range", label, lower, upper, share))
            rows["reference_quantiles"] += [(name, i, value) for i, value in enumerate(feature.get("quantiles", []))]
        else:
            for i, (category, share) in enumerate(zip(feature["categories"], feature["shares"], strict=True)):
                bins.append(("category", category, None, None, share))
                rows["reference_categories"].append((name, category, i))
            other = len(bins)
            bins.append(("other", "__other__", None, None, feature["other_share"]))
            others = feature.get("other_categories", [])  # absent from profiles logged before it was listed
            rows["reference_categories"] += [(name, category, other) for category in others]
            bins.append(("unseen", "__unseen__", None, None, feature["unseen_share"]))
        bins.append(("missing", "__missing__", None, None, feature["missing_share"]))
        rows["reference_bins"] += [(name, i, *values) for i, values in enumerate(bins)]
    return rows
