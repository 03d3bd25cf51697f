"""The model and its registry: ``lab tune``, ``lab train``, ``lab promote``, ``lab champion``, ``lab reproduce``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, cast

import typer

from core.errors import LabError
from core.names import TAG_SNAPSHOT_PREFIX
from lab import output
from lab.context import Target, settings_for

if TYPE_CHECKING:
    from core.settings import Settings

METRICS = ("roc_auc", "pr_auc", "brier", "log_loss")
PARTS = ("train", "validation", "test")


def tune_command(
    ctx: typer.Context,
    target: Target = None,
    budget: Annotated[
        int, typer.Option(help="Hyperparameter settings to try (each with and without month_of_year).", min=1)
    ] = 5,
) -> None:
    """Search hyperparameters and features on the validation window; write the choice for `lab train`."""
    from ml.tuning import tune

    settings = settings_for(ctx, target)
    with output.status(f"tuning on the {settings.dbt_target} training mart's validation window"):
        tuned = tune(settings, budget=budget)
    table = output.table("#", *tuned.params, "month_of_year", "trees", "validation ROC AUC", title="tuning candidates")
    best = max(tuned.candidates, key=lambda c: c.validation_roc_auc)
    for i, candidate in enumerate(tuned.candidates, start=1):
        mark = " [green]chosen[/green]" if candidate is best else ""
        table.add_row(
            str(i),
            *(str(candidate.params[k]) for k in tuned.params),
            "yes" if candidate.month_of_year else "no",
            str(candidate.n_iter),
            f"{candidate.validation_roc_auc:.4f}{mark}",
        )
    output.show(table)
    windows = tuned.windows
    output.show(
        f"train {windows['train_start']}..{windows['train_end']} · "
        f"validation {windows['validation_start']}..{windows['validation_end']} (chosen on) · "
        f"budget {tuned.budget} settings x 2 · seed {tuned.seed} · run {tuned.run_id}"
    )
    output.show(f"written to {settings.tuned_config_path}; `lab train` uses it")


def train_command(
    ctx: typer.Context,
    target: Target = None,
    model: Annotated[str, typer.Option(help="gbm (gradient boosting) or baseline (logistic regression).")] = "gbm",
    through: Annotated[
        str | None,
        typer.Option("--through", help="Train as of the end of this month (YYYY-MM): later flights are left out."),
    ] = None,
) -> None:
    """Train on the training mart, log the run to MLflow and register the model as challenger."""
    from concurrent.futures import ThreadPoolExecutor

    from core.months import month_index

    settings = settings_for(ctx, target)
    if model not in {"gbm", "baseline"}:
        raise LabError(f"--model must be gbm or baseline, not {model!r}")
    if through is not None:
        month_index(through)  # a bad month is refused before the mart is read
    # The warehouse runs the mart's query (DuckDB lets go of the GIL) while this thread imports
    # scikit-learn and the rest of the training: over a second in which one core works alone.
    with ThreadPoolExecutor(1, thread_name_prefix="mart") as pool:
        from ml.data import prepare, query_mart

        rows = pool.submit(query_mart, settings)
        from ml.recorder import Recorder
        from ml.train import ModelKind, train

        mart = rows.result()  # a missing mart is refused here, before any recorder exists

    # Forked here, where this process is one thread again (the pool's has ended), with nothing
    # opened (the query's connection is closed): ml.recorder._fork.
    recorder = Recorder(settings, fork=True)
    with output.status(f"training {model} on the {settings.dbt_target} training mart"):
        frame = prepare(mart.to_pandas(), copy=False)
        result = train(settings, cast(ModelKind, model), frame=frame, through=through, recorder=recorder)
    metrics = result.metrics
    table = output.table(
        "metric",
        "validation",
        "test (95% interval)",
        title=f"{settings.model_name} v{result.model_version} (challenger)",
    )
    for key in METRICS:
        table.add_row(key, f"{metrics[f'validation_{key}']:.4f}", str(result.test[key]))
    for key in METRICS:
        if f"baseline_test_{key}" in metrics:
            table.add_row(f"baseline {key}", "", f"{metrics[f'baseline_test_{key}']:.4f}")
    output.show(table)
    horizon = "none declared by the mart" if result.horizon_minutes is None else f"{result.horizon_minutes} min"
    output.show(f"horizon     {horizon} before scheduled departure (every feature as of then)")
    if result.windows is not None:
        for part in PARTS:
            start, end = result.windows.bounds(part)  # type: ignore[arg-type]
            output.show(f"{part:<11} {start}..{end}  {result.window_rows[part]:>9,} flights")
    if result.tuned_config:
        excluded = ", ".join(result.excluded_features) or "none"
        output.show(f"tuned       {result.tuned_config} (features left out: {excluded})")
    calibration = "Platt scaling fitted on validation" if result.calibrated else "none (checked on validation)"
    output.show(
        f"calibration {calibration}: later-half validation log loss {metrics['calibration_log_loss_as_is']:.4f}"
        f" as is, {metrics['calibration_log_loss_platt']:.4f} with Platt"
    )
    precision = metrics["test_precision_at_threshold"]
    output.show(
        f"threshold   {settings.decision_threshold}: test precision "
        f"{'-' if precision != precision else f'{precision:.3f}'}, recall {metrics['test_recall_at_threshold']:.3f}"
        f" ({metrics['test_flagged_share_at_threshold']:.1%} of flights flagged late)"
    )
    output.show(f"run {result.run_id} · {result.rows:,} rows · training-window checksum {result.checksum}")


def promote_command(
    ctx: typer.Context,
    target: Target = None,
    version: Annotated[str | None, typer.Option(help="Model version to gate (default: the challenger).")] = None,
) -> None:
    """Make the challenger champion only if it beats the champion on a window neither was fitted on."""
    from ml.registry import promote

    settings = settings_for(ctx, target)
    decision = promote(settings, version)
    verdict = {
        "promoted": "[green]promoted[/green]",
        "rejected": "[yellow]not promoted[/yellow]",
        "undecided": "[yellow]undecided: not promoted[/yellow]",
    }[decision.outcome]
    output.show(f"v{decision.challenger_version} {verdict}: {decision.reason}")
    if decision.window is not None:
        output.show(f"window      {decision.window[0]}..{decision.window[1]} ({decision.rows:,} flights)")
    if decision.challenger_auc == decision.challenger_auc:  # not NaN: the challenger was scored
        output.show(f"challenger  v{decision.challenger_version} ROC AUC {decision.challenger_auc:.4f}")
    if decision.champion_auc is not None and decision.champion_version is not None:
        output.show(f"champion    v{decision.champion_version} ROC AUC {decision.champion_auc:.4f}")
    if decision.difference is not None:
        output.show(
            f"difference  {decision.difference} (paired bootstrap 95%); promoted only when the lower bound"
            f" is above {decision.margin}"
        )
    if decision.promoted and settings.serve_reload_url:
        _reload_the_api(settings)


def _reload_the_api(settings: Settings) -> None:
    """Tell a running API about its new champion now (it would find it at its next alias poll anyway)."""
    import httpx

    from orchestration.steps import refresh_serving

    try:
        answer = refresh_serving(settings)
    except httpx.HTTPError as exc:  # the promotion stands; the API finds it at its next poll
        output.note(f"the API at {settings.serve_reload_url} was not reloaded ({exc}); it polls the alias")
        return
    output.show(f"API reloaded: serving v{answer.get('version')}")


def champion_command(ctx: typer.Context, target: Target = None) -> None:
    """Show the served model: version, horizon, windows, test metrics with intervals, the gate's decision, lineage."""
    from ml.registry import champion_summary

    summary = champion_summary(settings_for(ctx, target))
    metrics, params, promotion, lineage = (
        cast(dict[str, float], summary["metrics"]),
        cast(dict[str, str], summary["params"]),
        cast(dict[str, str], summary["promotion"]),
        cast(dict[str, str], summary["lineage"]),
    )
    table = output.table(
        "metric", "validation", "test (95% interval)", title=f"champion: {summary['name']} v{summary['version']}"
    )
    for key in METRICS:
        if f"test_{key}" in metrics:
            table.add_row(
                key,
                f"{metrics.get(f'validation_{key}', float('nan')):.4f}",
                f"{metrics[f'test_{key}']:.4f} [{metrics[f'test_{key}_lo']:.4f}, {metrics[f'test_{key}_hi']:.4f}]",
            )
    output.show(table)
    output.show(f"{'horizon':<28} {params.get('prediction_horizon_minutes', '?')} min before scheduled departure")
    for part in PARTS:
        output.show(f"{part + ' window':<28} {params.get(f'{part}_start', '?')}..{params.get(f'{part}_end', '?')}")
    output.show(f"{'calibration':<28} {params.get('calibration', '?')}")
    if promotion:
        decided, window = promotion.get("lab.promotion.decision", "?"), promotion.get("lab.promotion.window") or "-"
        output.show(f"{'gate':<28} {decided} on {window}: {promotion.get('lab.promotion.reason', '')}")
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
    output.show(f"training-window checksum  recorded {result.recorded_checksum}")
    output.show(f"                          rebuilt  {result.rebuilt_checksum}")
    for part, recorded in result.recorded_window_checksums.items():
        output.show(f"{part + '-window checksum':<26}recorded {recorded or '-'}")
        output.show(f"{'':<26}rebuilt  {result.rebuilt_window_checksums[part]}")
    for key, value in result.rebuilt_metrics.items():
        output.show(f"{key:<22} recorded {result.recorded_metrics[key]:.6f}  rebuilt {value:.6f}")
    if not result.matches:
        output.error("the rebuilt training set does not match the run")
        raise typer.Exit(1)
    output.show("[green]reproduced: identical training set and metrics[/green]")
