"""The model and its registry: ``lab train``, ``lab promote``, ``lab champion``, ``lab reproduce``."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from core.errors import LabError
from core.names import TAG_SNAPSHOT_PREFIX
from lab import output
from lab.context import Target, settings_for


def train_command(
    ctx: typer.Context,
    target: Target = None,
    model: Annotated[str, typer.Option(help="gbm (gradient boosting) or baseline (logistic regression).")] = "gbm",
) -> None:
    """Train on the training mart, log the run to MLflow and register the model as challenger."""
    from ml.train import ModelKind, train

    settings = settings_for(ctx, target)
    if model not in {"gbm", "baseline"}:
        raise LabError(f"--model must be gbm or baseline, not {model!r}")
    with output.status(f"training {model} on the {settings.dbt_target} training mart"):
        result = train(settings, cast(ModelKind, model))
    table = output.table(
        "metric", "held-out months", title=f"{settings.model_name} v{result.model_version} (challenger)"
    )
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "baseline_roc_auc", "baseline_pr_auc"):
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4f}")
    output.show(table)
    output.show(f"run {result.run_id} · {result.rows:,} rows · training-set checksum {result.checksum}")


def promote_command(
    ctx: typer.Context,
    target: Target = None,
    version: Annotated[str | None, typer.Option(help="Model version to gate (default: the challenger).")] = None,
) -> None:
    """Make the challenger champion only if it beats the champion on the same held-out months."""
    from ml.registry import promote

    decision = promote(settings_for(ctx, target), version)
    verdict = "[green]promoted[/green]" if decision.promoted else "[yellow]not promoted[/yellow]"
    output.show(f"v{decision.challenger_version} {verdict}: {decision.reason}")


def champion_command(ctx: typer.Context, target: Target = None) -> None:
    """Show the served model: version, held-out metrics and lineage."""
    from ml.registry import champion_summary

    summary = champion_summary(settings_for(ctx, target))
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    table = output.table("metric", "held-out months", title=f"champion: {summary['name']} v{summary['version']}")
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "baseline_roc_auc"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4f}")
    output.show(table)
    lineage = summary["lineage"]
    assert isinstance(lineage, dict)
    for key in sorted(k for k in lineage if k.startswith(TAG_SNAPSHOT_PREFIX) or k == "mlflow.source.git.commit"):
        output.show(f"{key:<28} {lineage[key]}")


def reproduce_command(
    ctx: typer.Context, run_id: Annotated[str, typer.Argument(help="The MLflow run to rebuild.")]
) -> None:
    """Rebuild a run's training set from its recorded Iceberg snapshots and check it matches."""
    from ml.reproduce import reproduce

    settings = settings_for(ctx)
    with output.status("rebuilding the training set at the recorded snapshots"):
        result = reproduce(settings, run_id)
    for name, snapshot in result.snapshots.items():
        output.show(f"raw.{name:<10} snapshot {snapshot}")
    output.show(f"training-set checksum  recorded {result.recorded_checksum}")
    output.show(f"                       rebuilt  {result.rebuilt_checksum}")
    for key, value in result.rebuilt_metrics.items():
        output.show(f"{key:<22} recorded {result.recorded_metrics[key]:.6f}  rebuilt {value:.6f}")
    if not result.matches:
        output.error("the rebuilt training set does not match the run")
        raise typer.Exit(1)
    output.show("[green]reproduced: identical training set and metrics[/green]")
