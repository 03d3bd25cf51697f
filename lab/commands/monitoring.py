"""``lab monitor``: land the prediction log, build the monitoring models, show the months, decide on retraining."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from lab import output
from lab.context import Target, settings_for


def _band(value: Any, warn: float, alert: float, fmt: str = "{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    text = fmt.format(value)
    colour = "red" if value >= alert else "yellow" if value >= warn else "green"
    return f"[{colour}]{text}[/{colour}]"


def _auc(value: Any, floor: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    below = floor is not None and not (isinstance(floor, float) and math.isnan(floor)) and value < floor
    return f"[{'red' if below else 'green'}]{value:.4f}[/]"


def monitor_command(
    ctx: typer.Context,
    target: Target = None,
    month: Annotated[
        str | None, typer.Option("--month", "-m", help="Monitor one month (YYYY-MM); default: every month logged.")
    ] = None,
    land: Annotated[bool, typer.Option("--land/--no-land", help="Load the prediction log into the lake first.")] = True,
    retrain: Annotated[
        bool, typer.Option("--retrain", help="When a rule fires: train a challenger and run the promotion gate.")
    ] = False,
) -> None:
    """Land the prediction log, build the dbt monitoring models, print the months and the retrain decision.

    The rules judge the champion: in `--month`, or else in its latest month with enough predictions.
    """
    from monitoring import monitor, rules

    settings = settings_for(ctx, target)
    if land:
        with output.status("landing the prediction log"):
            rows = monitor.land_predictions(settings, month)
        output.show(f"prediction log landed: {rows:,} rows loaded{f' for {month}' if month else ''}")
    with output.status(f"building the monitoring models on {settings.dbt_target}"):
        versions = monitor.build(settings, month)
    output.show(f"references written for model versions: {', '.join(versions) or 'none (no predictions yet)'}")
    monitored = monitor.read(settings)
    s = settings
    table = output.table(
        "month",
        "version",
        "predictions",
        "labelled",
        "ROC AUC",
        "estimated",
        "test interval low",
        "prediction PSI",
        "max input PSI",
        "drifted (importance)",
        title=f"Monitoring on {settings.dbt_target} (PSI bands {s.monitor_psi_warn} / {s.monitor_psi_alert})",
    )
    for row in monitored.months(None):
        table.add_row(
            row["prediction_month"],
            f"v{row['model_version']}",
            f"{row['predictions']:,}",
            f"{row['label_coverage']:.1%}",
            _auc(row["roc_auc"], row["reference_roc_auc_lo"]),
            _auc(row["estimated_roc_auc"], row["reference_roc_auc_lo"]),
            "—" if row["reference_roc_auc_lo"] is None else f"{row['reference_roc_auc_lo']:.4f}",
            _band(row["prediction_psi"], s.monitor_psi_warn, s.monitor_psi_alert),
            f"{_band(row['max_feature_psi'], s.monitor_psi_warn, s.monitor_psi_alert)} {row['most_drifted_feature']}",
            _band(
                row["drifted_importance_share"],
                s.monitor_drift_importance_share / 2,
                s.monitor_drift_importance_share,
                "{:.0%}",
            )
            + f" ({row['drifted_features']} features)",
        )
    output.show(table)
    from monitoring.references import champion_version

    champion = champion_version(settings)
    decision = rules.decide(monitored.judged(champion, month, settings.monitor_min_predictions), settings)
    path = monitor.report(settings, monitored, decision, notes=[])
    output.show(f"report: {path} (also logged to MLflow, experiment {settings.mlflow_experiment}-monitoring)")
    verdict = "[red]retrain[/red]" if decision.retrain else "[green]no retraining[/green]"
    output.show(f"{verdict} ({decision.trigger}): {decision.reason}")
    if retrain and decision.retrain:
        from ml.registry import promote
        from ml.train import train

        with output.status("retraining: a challenger on the whole training mart"):
            result = train(settings)
        output.show(f"challenger v{result.model_version} (test ROC AUC {result.test['roc_auc']})")
        gate = promote(settings, result.model_version)
        output.show(f"gate: v{gate.challenger_version} {gate.outcome}: {gate.reason}")
