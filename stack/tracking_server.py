"""The app the full stack's MLflow tracking server runs: MLflow's basic-auth app, plus the registry's one rule.

MLflow's permissions cannot say "may register versions but may not choose
what is served": creating a model version and setting an alias both need
EDIT on the registered model. So `mlflow server --app-name lab-auth` (the
entry point in pyproject.toml) runs MLflow's own basic-auth app and adds,
after MLflow has authenticated and authorised the request:

- an alias other than ``challenger`` (the one every trained version gets)
  is set or deleted by the promotion identity only (``MLFLOW_PROMOTER``), so
  nothing but the gate can change what the API serves;
- a registered model is renamed by an admin only (a rename would move the
  champion out from under the API just the same).

Everything else is MLflow's: users, per-model permissions, the admin
bootstrap (``MLFLOW_AUTH_ADMIN_*``), the configuration file
(``MLFLOW_AUTH_CONFIG_PATH``).
"""

from __future__ import annotations

from typing import Any

from core.names import CHALLENGER, MLFLOW_PROMOTER


def create_app(app: Any = None) -> Any:
    """MLflow's basic-auth app (FastAPI around the Flask app) with the rule above."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as basic_auth

    flask = app if app is not None else flask_app
    served = basic_auth(flask)
    # Registered after MLflow's own hook: a request reaching this one is authenticated
    # and allowed by MLflow's permissions (or comes from an admin).
    flask.before_request(_registry_rule)
    return served


def _registry_rule() -> Any:
    from flask import request
    from mlflow.server.auth import authenticate_request, sender_is_admin

    path = request.path.rstrip("/")
    if request.method in {"POST", "DELETE"} and path.endswith("/registered-models/alias"):
        body = request.get_json(silent=True)
        alias = (body if isinstance(body, dict) else {}).get("alias") or request.args.get("alias")
        # MLflow's hook has authenticated this request already (or answered 401).
        if alias == CHALLENGER or getattr(authenticate_request(), "username", None) == MLFLOW_PROMOTER:
            return None
        return _forbidden(f"only the promotion step ({MLFLOW_PROMOTER}) may set or delete alias {alias!r}")
    if request.method == "POST" and path.endswith("/registered-models/rename") and not sender_is_admin():
        return _forbidden("only an admin may rename a registered model")
    return None


def _forbidden(message: str) -> Any:
    from flask import jsonify

    response = jsonify(error_code="PERMISSION_DENIED", message=message)
    response.status_code = 403
    return response
