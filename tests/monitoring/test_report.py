"""The monitoring report: rendered in headless Chromium, as a person would open it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from monitoring.report import render_report

MONTHS = ["2024-01", "2024-02", "2024-03"]
HOSTILE = "<script>alert(1)</script>"
# name, kind, importance, PSI per month, bins as (label, reference share, current shares per month)
Feature = tuple[str, str, float, list[float], list[tuple[str, float, list[float]]]]
FEATURES: list[Feature] = [
    ("probability", "numeric", math.nan, [0.02, 0.05, 0.14], []),
    (
        "dep_delay_mean_7d",
        "numeric",
        0.41,
        [0.03, 0.09, 0.31],
        [("<= 0", 0.35, [0.34, 0.30, 0.20]), ("(0, 15]", 0.40, [0.41, 0.40, 0.35]), ("> 15", 0.25, [0.25, 0.30, 0.45])],
    ),
    (
        "distance",
        "numeric",
        0.22,
        [0.01, 0.01, 0.02],
        [("<= 500", 0.30, [0.30, 0.31, 0.29]), ("(500, 1000]", 0.45, [0.45, 0.44, 0.46]), ("> 1000", 0.25, [0.25] * 3)],
    ),
    (
        "carrier",
        "categorical",
        0.18,
        [0.04, 0.06, 0.12],
        [
            ("AA", 0.30, [0.30, 0.28, 0.25]),
            ("UA", 0.40, [0.39, 0.40, 0.38]),
            ("__other__", 0.30, [0.30, 0.30, 0.30]),
            ("__unseen__", 0.0, [0.01, 0.02, 0.07]),
        ],
    ),
    (
        "sched_dep_hour",
        "numeric",
        0.09,
        [0.00, 0.02, 0.03],
        [("<= 9", 0.33, [0.33, 0.32, 0.31]), ("(9, 16]", 0.34, [0.34, 0.35, 0.35]), ("> 16", 0.33, [0.33, 0.33, 0.34])],
    ),
]


def _band(psi: float) -> str:
    return "alert" if psi >= 0.25 else "warn" if psi >= 0.1 else "ok"


def frames(features: list[Feature] = FEATURES) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three months of version 3: labels arrive late, and March's realised ROC AUC falls below the reference."""
    nan = math.nan
    performance = pd.DataFrame(
        {
            "prediction_month": MONTHS,
            "model_version": ["3"] * 3,
            "predictions": [9120, 8870, 9410],
            "labelled": [9120, 6200, 2350],
            "label_coverage": [1.0, 0.699, 0.250],
            "late_share": [0.21, 0.22, 0.19],
            "mean_probability": [0.22, 0.24, 0.29],
            "roc_auc": [0.731, 0.702, 0.641],
            "average_precision": [0.48, 0.44, 0.37],
            "brier": [0.151, 0.158, 0.172],
            "log_loss": [0.462, 0.480, 0.521],
            "calibration_gap": [0.004, 0.011, nan],
            "estimated_roc_auc": [0.728, 0.715, 0.690],
            "estimated_brier": [0.150, 0.155, 0.165],
            "estimated_log_loss": [0.460, 0.474, 0.502],
            "roc_auc_estimate_error": [-0.003, 0.013, 0.049],
            "reference_roc_auc": [0.72] * 3,
            "reference_roc_auc_lo": [0.70] * 3,
            "reference_roc_auc_hi": [0.74] * 3,
        }
    )
    drift_rows, bin_rows = [], []
    for name, kind, importance, psis, feature_bins in features:
        for m, month in enumerate(MONTHS):
            numeric = kind == "numeric"
            drift_rows.append(
                {
                    "prediction_month": month,
                    "model_version": "3",
                    "feature": name,
                    "kind": kind,
                    "predictions": int(performance.predictions[m]),
                    "missing_rate": 0.01,
                    "psi": psis[m],
                    "wasserstein_over_std": psis[m] / 2 if numeric else nan,
                    "js_distance": nan if numeric else psis[m] / 3,
                    "largest_share_change": 0.1 * psis[m],
                    "largest_share_change_bin": feature_bins[-1][0] if feature_bins else "> 0.5",
                    "importance": importance,
                    "psi_band": _band(psis[m]),
                    "is_drifted": psis[m] >= 0.25,
                }
            )
            for index, (label, reference, current) in enumerate(feature_bins):
                bin_rows.append(
                    {
                        "prediction_month": month,
                        "model_version": "3",
                        "feature": name,
                        "bin_index": index,
                        "bin_label": label,
                        "reference_share": reference,
                        "current_share": current[m],
                    }
                )
    return performance, pd.DataFrame(drift_rows), pd.DataFrame(bin_rows)


def _row(page: str, month: str) -> str:
    match = re.search(rf'<tr class="([^"]*)" data-month="{month}">(.*?)</tr>', page, re.S)
    assert match, f"no table row for {month}"
    return match.group(0)


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    from warehouse.docs import render

    notes = ["Decision: retrain — realised ROC AUC 0.641 is below the reference interval [0.70, 0.74]"]
    path = render_report(*frames(), tmp_path / "report.html", title="Flight delay model: monitoring", notes=notes)
    page = path.read_text(encoding="utf-8")
    screenshot = tmp_path / "report.png"
    dom = render(path.resolve().as_uri(), screenshot)

    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "Flight delay model: monitoring" in dom and "Decision: retrain" in dom
    assert all(month in dom for month in MONTHS)
    assert "dep_delay_mean_7d" in dom and "carrier" in dom
    # heatmap + 4 feature histograms + ROC AUC over time + label coverage
    assert dom.count("<img") == 1 + 4 + 2
    # static and offline: no script, no link, every image inline
    assert "<script" not in page and "href=" not in page
    assert page.count('<img alt="') == page.count('src="data:image/png;base64,') == 7
    # March: realised 0.641 < the interval's 0.70, so the ROC AUC cell and its row are alerts.
    march = _row(page, "2024-03")
    assert '<td class="roc alert">0.641</td>' in march and march.startswith('<tr class="alert"')
    assert "dep_delay_mean_7d (0.310)" in march  # the largest-PSI feature, in its band
    assert '<td class="roc">0.731</td>' in _row(page, "2024-01")
    assert "<td>—</td>" in march  # the NaN calibration gap


def test_feature_names_and_notes_are_escaped(tmp_path: Path) -> None:
    hostile: list[Feature] = [(HOSTILE if n == "carrier" else n, *rest) for n, *rest in FEATURES]  # type: ignore[misc]
    path = render_report(*frames(hostile), tmp_path / "r.html", title=f"t {HOSTILE}", notes=[HOSTILE])
    page = path.read_text(encoding="utf-8")
    assert HOSTILE not in page and "<script" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 3  # title, heading, note (and the alt text)


def test_empty_frames_write_a_page(tmp_path: Path) -> None:
    empty = pd.DataFrame()
    path = render_report(empty, empty, empty, tmp_path / "sub" / "r.html", title="Nothing yet", notes=["simulated"])
    page = path.read_text(encoding="utf-8")
    assert "Nothing to show yet" in page and "simulated" in page and "<img" not in page


def test_one_month_with_no_labels(tmp_path: Path) -> None:
    performance, drift, bins = frames()
    performance = performance.head(1).copy()
    for column in ["roc_auc", "average_precision", "brier", "log_loss", "calibration_gap", "roc_auc_estimate_error"]:
        performance[column] = math.nan
    performance["estimated_roc_auc"] = 0.65  # below the interval with no labels: a warning, not an alert
    drift, bins = drift[drift.prediction_month == MONTHS[0]], bins[bins.prediction_month == MONTHS[0]]
    page = render_report(performance, drift, bins, tmp_path / "r.html", title="one", top_features=2).read_text()
    row = _row(page, MONTHS[0])
    assert '<td class="roc">—</td>' in row and '<td class="estimate warn">0.650</td>' in row
    assert page.count("<img") == 1 + 2 + 2
