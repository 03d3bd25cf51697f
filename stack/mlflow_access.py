"""The tracking server's identities and grants, made idempotently by `lab stack up` and compose's mlflow-init.

Three identities besides MLflow's admin, each with its password from the
environment (compose's .env names):

- ``pipeline`` (``MLFLOW_PIPELINE_PASSWORD``): training and monitoring; EDIT on
  the registered model, so it registers versions and tags them, and names
  its new version ``challenger``;
- ``promote`` (``MLFLOW_PROMOTE_PASSWORD``): the gate; EDIT on the registered
  model, and (``stack/tracking_server.py``) the only identity that may move
  ``champion``;
- ``serve`` (``MLFLOW_SERVE_PASSWORD``): the API; reads, as every signed-in
  identity does (``default_permission = READ`` in docker/mlflow-auth.ini).

The registered model is created here, by the admin, so no job owns it (an
owner gets MANAGE: it could delete the model, champion and all); so are the
training and monitoring experiments, where ``pipeline`` gets EDIT (else the
first process to ask for one, the API at its start, would own it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from core.names import MLFLOW_PROMOTER
from core.settings import Settings

ADMIN = "admin"
PIPELINE, SERVE = "pipeline", "serve"
IDENTITIES = (PIPELINE, MLFLOW_PROMOTER, SERVE)
# Who may write the registered model (EDIT): register versions, tag them, set aliases
# (which aliases, stack/tracking_server.py decides).
MODEL_WRITERS = (PIPELINE, MLFLOW_PROMOTER)


def password_variable(identity: str) -> str:
    return f"MLFLOW_{identity.upper()}_PASSWORD"


def provision(settings: Settings, admin_password: str, passwords: Mapping[str, str]) -> None:
    """Create (or re-password) every identity; the registered model and the experiments, with their grants."""
    import mlflow
    from mlflow.exceptions import RestException
    from mlflow.server.auth.client import AuthServiceClient
    from pydantic import SecretStr

    from ml.tracking import configure_mlflow

    # This process signs in as the admin, through the one place every lab process signs in.
    configure_mlflow(
        settings.model_copy(update={"mlflow_username": ADMIN, "mlflow_password": SecretStr(admin_password)})
    )
    tracking_uri, model_name = settings.mlflow_tracking_uri, settings.model_name
    auth = AuthServiceClient(tracking_uri)
    for identity in IDENTITIES:
        try:
            auth.create_user(identity, passwords[identity])
        except RestException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            auth.update_user_password(identity, passwords[identity])
    registry = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        registry.create_registered_model(model_name, description="Flight delay: registered by the stack's admin")
    except RestException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for identity in MODEL_WRITERS:
        _grant(auth, identity, "registered_model", model_name, "EDIT")
    # The experiments too, or the first reader to ask for one (the API) would own it.
    for name in (settings.mlflow_experiment, settings.mlflow_monitoring_experiment):
        experiment = registry.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else registry.create_experiment(name)
        _grant(auth, PIPELINE, "experiment", str(experiment_id), "EDIT")


def _grant(auth: object, identity: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give ``identity`` exactly ``permission`` on a resource (MLflow refuses a second grant)."""
    from mlflow.exceptions import RestException

    try:
        auth.grant_user_permission(identity, resource_type, resource_id, permission)  # type: ignore[attr-defined]
    except RestException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(identity, resource_type, resource_id)  # type: ignore[attr-defined]
        auth.grant_user_permission(identity, resource_type, resource_id, permission)  # type: ignore[attr-defined]


def main() -> None:
    """compose's mlflow-init: the passwords from the environment, the server and model from the settings."""
    settings = Settings()
    passwords = {identity: os.environ[password_variable(identity)] for identity in IDENTITIES}
    provision(settings, os.environ["MLFLOW_ADMIN_PASSWORD"], passwords)


if __name__ == "__main__":
    main()
