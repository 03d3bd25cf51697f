"""MLflow set-up: every process that talks to the tracking store or the registry starts here."""

from __future__ import annotations

from core.settings import Settings


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store; return the experiment id."""
    import mlflow

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    is_server = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    return str(
        mlflow.create_experiment(
            settings.mlflow_experiment,
            artifact_location=None if is_server else settings.mlflow_artifact_uri,
        )
    )
