"""MLflow set-up: every process that talks to the tracking store or the registry starts here."""

from __future__ import annotations

import os

from core.names import MLFLOW_PROMOTER
from core.settings import Settings


def configure_mlflow(settings: Settings, *, as_promoter: bool = False) -> None:
    """Point MLflow at the configured store, signed in as this process's identity.

    ``as_promoter`` signs in as the promotion gate (``MLFLOW_PROMOTER``) where a
    password is configured for it, else as the process's own identity.

    Also turns MLflow's pickle deserialisation off for this process: models
    are loaded by ``ml.artifacts.load_model`` only, and any other path that
    would unpickle an artifact (``mlflow.sklearn.load_model``, pyfunc) fails
    instead of running what the artifact holds.
    """
    import mlflow

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    # Loading a model downloads its artifact; a progress bar per load is noise in logs and demos.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    if settings.mlflow_tracking_uri.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
    _sign_in(settings, as_promoter)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def use_experiment(settings: Settings, name: str | None = None) -> str:
    """``configure_mlflow``, then the id of the experiment runs are logged to (default: the training one).

    Created here when missing, by whoever logs first. Only writers call this: an
    experiment belongs to its creator on a server with sign-in, so a reader (the API)
    must never be the one to create it (the stack's mlflow-init creates both first).
    """
    import mlflow

    configure_mlflow(settings)
    name = name or settings.mlflow_experiment
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    is_server = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    return str(mlflow.create_experiment(name, artifact_location=None if is_server else settings.mlflow_artifact_uri))


def _sign_in(settings: Settings, as_promoter: bool) -> None:
    """MLflow's client reads its credentials from the environment at every request: set them there."""
    username, password = settings.mlflow_username, settings.mlflow_password
    if as_promoter and settings.mlflow_promote_password is not None:
        username, password = MLFLOW_PROMOTER, settings.mlflow_promote_password
    if username and password is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password.get_secret_value()
    else:
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
