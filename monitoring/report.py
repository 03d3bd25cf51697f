"""A static, self-contained HTML monitoring report: one file a person can open anywhere.

No JavaScript, no network, no files beside it: the plots are matplotlib PNGs inlined as
``data:`` URIs, so the report can be attached to a ticket or archived as an artifact and
still read the same years later. Every string from the data (feature names, bin labels,
notes) is HTML-escaped, since a feature is named by whoever wrote the upstream table.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

PREDICTION = "probability"  # the drift frame's row for the model's own output (prediction drift)
BAND_RANK = {"ok": 0, "warn": 1, "alert": 2}
STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; }
td.text { text-align: left; }
td.ok { background: #e6f4ea; } td.warn { background: #fff4d6; } td.alert { background: #fbd5d5; color: #8a0000; }
tr.warn td:first-child { border-left: 4px solid #e0a800; } tr.alert td:first-child { border-left: 4px solid #c00; }
.notes li { margin: 2px 0; } .empty { color: #666; font-style: italic; }
img { display: block; margin: 8px 0; max-width: 100%; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
"""


def render_report(
    performance: pd.DataFrame,
    drift: pd.DataFrame,
    bins: pd.DataFrame,
    path: Path,
    *,
    title: str,
    notes: Sequence[str] = (),
    top_features: int = 4,
) -> Path:
    """Write the report to ``path`` and return it.

    Empty frames give a page that says there is nothing to show yet rather than an error:
    the report runs on a schedule, and its first run comes before the first predictions.
    """
    keys = _column_keys(performance, drift)
    body = [f"<h1>{_e(title)}</h1>"]
    if notes:
        body.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if performance.empty and drift.empty and bins.empty:
        body.append('<p class="empty">Nothing to show yet: no predictions have been monitored.</p>')
    else:
        body += ["<h2>Monthly summary</h2>", _table(performance, drift, keys)]
        body += ["<h2>Drift by feature and month (PSI)</h2>", _heatmap(drift, keys)]
        body += ["<h2>Reference vs current, latest month</h2>", _histograms(drift, bins, top_features)]
        body += ["<h2>Performance over time</h2>", _performance_plots(performance, keys)]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA: the frames mark "not known yet" all three ways."""
    try:
        return bool(math.isnan(value))
    except TypeError:
        return value is None or str(value) == "<NA>"


def _fmt(value: Any, digits: int = 3, percent: bool = False) -> str:
    """A number for a cell; "—" for a missing one (no labels yet is normal, not an error)."""
    if _missing(value):
        return "—"
    if percent:
        return f"{float(value):.0%}"
    return f"{int(value):,}" if isinstance(value, numbers.Integral) else f"{float(value):.{digits}f}"


def _column_keys(performance: pd.DataFrame, drift: pd.DataFrame) -> dict[tuple[str, str], str]:
    """One label per (month, model_version), in month order: the month alone unless it had two versions.

    A retrain lands mid-month, so a month can be served by two models; those must not be averaged.
    """
    pairs: list[tuple[str, str]] = []
    for frame in (performance, drift):
        if not frame.empty:
            pairs += [(str(m), str(v)) for m, v in frame[["prediction_month", "model_version"]].itertuples(index=False)]
    ordered = sorted(dict.fromkeys(pairs), key=lambda p: p[0])  # stable: versions keep the data's order
    per_month: dict[str, int] = {}
    for month, _ in ordered:
        per_month[month] = per_month.get(month, 0) + 1
    return {(m, v): m if per_month[m] == 1 else f"{m} · v{v}" for m, v in ordered}


def _key(row: Any, keys: dict[tuple[str, str], str]) -> str:
    return keys[(str(row.prediction_month), str(row.model_version))]


def _table(performance: pd.DataFrame, drift: pd.DataFrame, keys: dict[tuple[str, str], str]) -> str:
    """Months as rows. ROC AUC is red below the reference interval; the estimate warns when no labels exist yet."""
    if performance.empty:
        return '<p class="empty">No performance rows yet.</p>'
    worst: dict[str, Any] = {}
    for row in drift.itertuples(index=False) if not drift.empty else []:
        k = _key(row, keys)
        if not _missing(row.psi) and (k not in worst or row.psi > worst[k].psi):
            worst[k] = row
    head = [
        "Month",
        "Model",
        "Predictions",
        "Label coverage",
        "ROC AUC",
        "Estimated ROC AUC",
        "Brier",
        "Log loss",
        "Calibration gap",
        "Largest PSI",
    ]
    rows = ["<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in sorted(performance.itertuples(index=False), key=lambda r: _key(r, keys)):
        k, lo = _key(r, keys), r.reference_roc_auc_lo
        roc_class = "alert" if not _missing(lo) and not _missing(r.roc_auc) and r.roc_auc < lo else ""
        estimate = _or(r.estimated_roc_auc, math.inf)
        est_class = "warn" if not _missing(lo) and _missing(r.roc_auc) and estimate < lo else ""
        top = worst.get(k)
        psi_class = str(top.psi_band) if top is not None and str(top.psi_band) in BAND_RANK else ""
        psi_text = f"{top.feature} ({top.psi:.3f})" if top is not None else "—"
        band = max((c for c in (roc_class, est_class, psi_class) if c), key=lambda c: BAND_RANK.get(c, 0), default="")
        cells = [
            ("text", k),
            ("text", r.model_version),
            ("", _fmt(r.predictions)),
            ("", _fmt(r.label_coverage, percent=True)),
            (f"roc {roc_class}", _fmt(r.roc_auc)),
            (f"estimate {est_class}", _fmt(r.estimated_roc_auc)),
            ("", _fmt(r.brier)),
            ("", _fmt(r.log_loss)),
            ("", _fmt(r.calibration_gap)),
            (f"text psi {psi_class}", psi_text),
        ]
        tds = "".join(f"{_td(c)}{_e(v)}</td>" for c, v in cells)
        rows.append(f'<tr class="{_e(band)}" data-month="{_e(k)}">{tds}</tr>')
    return "\n".join([*rows, "</tbody></table>"])


def _td(classes: str) -> str:
    return f'<td class="{_e(classes.strip())}">' if classes.strip() else "<td>"


def _png(fig: Any, alt: str) -> str:
    """The figure as an inline ``<img>``: the report must stand alone."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _feature_order(drift: pd.DataFrame) -> list[str]:
    """The prediction first (its drift is the first sign of trouble), then features by importance."""
    importance = drift.groupby("feature", sort=False)["importance"].mean()
    ranked = sorted(importance.items(), key=lambda kv: (kv[0] != PREDICTION, -_or(kv[1], -1.0), str(kv[0])))
    return [str(name) for name, _ in ranked]


def _or(value: Any, default: float) -> float:
    return default if _missing(value) else float(value)


def _heatmap(drift: pd.DataFrame, keys: dict[tuple[str, str], str]) -> str:
    if drift.empty:
        return '<p class="empty">No drift rows yet.</p>'
    import numpy as np

    plt = _pyplot()
    features, columns = _feature_order(drift), list(dict.fromkeys(keys.values()))
    grid = np.full((len(features), len(columns)), np.nan)
    for row in drift.itertuples(index=False):
        grid[features.index(str(row.feature)), columns.index(_key(row, keys))] = _or(row.psi, math.nan)
    top = max(0.25, float(np.nanmax(grid))) if not np.isnan(grid).all() else 0.25
    fig, ax = plt.subplots(figsize=(2 + 1.1 * len(columns), 1 + 0.45 * len(features)))
    ax.imshow(np.ma.masked_invalid(grid), cmap="Reds", vmin=0, vmax=top, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        text = "—" if math.isnan(value) else f"{value:.2f}"
        ax.text(j, i, text, ha="center", va="center", color="white" if value > top * 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(features)), features)
    ax.set_title("PSI (reference window vs month); 0.1 warn, 0.25 alert")
    return _png(fig, "PSI heatmap, feature by month")


def _histograms(drift: pd.DataFrame, bins: pd.DataFrame, top_features: int) -> str:
    """Where a drift came from: the bins whose share moved, for the features the model leans on most."""
    if bins.empty or drift.empty or top_features <= 0:
        return '<p class="empty">No binned distributions yet.</p>'
    month = str(bins["prediction_month"].astype(str).max())
    latest = bins[bins["prediction_month"].astype(str) == month]
    version = str(latest["model_version"].astype(str).iloc[-1])  # the version served last in that month
    latest = latest[latest["model_version"].astype(str) == version]
    ranking = [f for f in _feature_order(drift) if f != PREDICTION and f in set(latest["feature"].astype(str))]
    plt = _pyplot()
    images = []
    for feature in ranking[:top_features]:
        part = latest[latest["feature"].astype(str) == feature].sort_values("bin_index")
        labels = [str(b) for b in part["bin_label"]]
        x = range(len(labels))
        fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 1.5), 3))
        ax.bar([i - 0.2 for i in x], part["reference_share"].astype(float), width=0.4, label="reference")
        ax.bar([i + 0.2 for i in x], part["current_share"].astype(float), width=0.4, label=month)
        ax.set_xticks(list(x), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("share of rows")
        ax.set_title(f"{feature} (model v{version})", fontsize=10)
        ax.legend(fontsize=8)
        images.append(_png(fig, f"{feature}: reference vs {month}"))
    return '<div class="grid">' + "".join(images) + "</div>" if images else '<p class="empty">No binned features.</p>'


def _performance_plots(performance: pd.DataFrame, keys: dict[tuple[str, str], str]) -> str:
    """Realised ROC AUC lags by the label delay; the estimate beside it is what there is meanwhile."""
    if performance.empty:
        return '<p class="empty">No performance rows yet.</p>'
    plt = _pyplot()
    rows = sorted(performance.itertuples(index=False), key=lambda r: _key(r, keys))
    labels, x = [_key(r, keys) for r in rows], list(range(len(rows)))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) + 2), 3.2))
    for i, r in enumerate(rows):  # a box per month: the reference can change when the model does
        if not (_missing(r.reference_roc_auc_lo) or _missing(r.reference_roc_auc_hi)):
            label = "reference 95% interval" if i == 0 else None
            ax.fill_between(
                [i - 0.4, i + 0.4], r.reference_roc_auc_lo, r.reference_roc_auc_hi, color="0.85", label=label
            )
    ax.plot(x, [_or(r.roc_auc, math.nan) for r in rows], "o-", label="realised")
    ax.plot(x, [_or(r.estimated_roc_auc, math.nan) for r in rows], "s--", label="estimated (CBPE)")
    if all(_missing(r.roc_auc) and _missing(r.estimated_roc_auc) for r in rows):
        ax.text(0.5, 0.5, "no ROC AUC yet", transform=ax.transAxes, ha="center", color="0.4")
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel("ROC AUC")
    ax.set_title("ROC AUC by month")
    ax.legend(fontsize=8)
    auc = _png(fig, "ROC AUC by month, realised and estimated")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(rows) + 2), 2.6))
    ax.bar(x, [_or(r.label_coverage, 0.0) for r in rows])
    ax.set_xticks(x, labels, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of predictions labelled")
    ax.set_title("Label coverage by month")
    return auc + _png(fig, "Label coverage by month")
