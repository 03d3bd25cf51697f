"""The stack's tracking server: sign-in required, and only the promotion gate moves the champion.

A real `mlflow server` with the stack's app (``--app-name lab-auth``) and the
stack's settings file (docker/mlflow-auth.ini), its stores on a fresh Postgres
database, provisioned by stack/mlflow_access.py as `lab stack up` does.
The same checks against MLflow's own basic-auth app show what the rule adds:
there, the pipeline's identity could set the champion itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import mlflow
import pytest
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from core.names import CHALLENGER, CHAMPION, MLFLOW_PROMOTER
from core.processes import free_port, stop, wait_until_answering
from core.settings import Settings
from ml.tracking import configure_mlflow, use_experiment
from stack.mlflow_access import PIPELINE, SERVE, provision
from stack.runtime import MLFLOW_AUTH_INI

pytestmark = [pytest.mark.slow, pytest.mark.integration]

MODEL = "flight_delay_auth_test"
PASSWORDS = {PIPELINE: "pipeline-secret-1", MLFLOW_PROMOTER: "promote-secret-1", SERVE: "serve-secret-1"}
ADMIN_PASSWORD = "admin-secret-123"


@pytest.fixture(params=["lab-auth", "basic-auth"])
def server(request: pytest.FixtureRequest, pg_database: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(app name, URL) of a running tracking server with the stack's identities and model."""
    app_name = request.param
    db = urlparse(pg_database)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LAB_"))},
        "MLFLOW_BACKEND_STORE_URI": pg_database.replace("postgresql://", "postgresql+psycopg2://", 1),
        "MLFLOW_AUTH_CONFIG_PATH": str(MLFLOW_AUTH_INI),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-session-key",
        "PGHOST": db.hostname or "127.0.0.1",
        "PGPORT": str(db.port or 5432),
        "PGUSER": db.username or "postgres",
        "PGDATABASE": db.path.lstrip("/"),
        **({"PGPASSWORD": db.password} if db.password else {}),
    }
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    argv = [mlflow_bin, "server", "--app-name", app_name, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    argv += ["--serve-artifacts", "--artifacts-destination", (tmp_path / "artifacts").as_uri()]
    log = (tmp_path / "mlflow.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, f"{url}/health", 120, "mlflow server")
        stack_settings = Settings(_env_file=None, home=tmp_path, mlflow_tracking_uri=url, model_name=MODEL)  # type: ignore[call-arg]
        provision(stack_settings, ADMIN_PASSWORD, PASSWORDS)
        provision(stack_settings, ADMIN_PASSWORD, PASSWORDS)  # a second `up` changes nothing
        yield app_name, url
    finally:
        stop(process, grace=10, group=True)
        log.close()
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name, None)


def _settings(url: str, identity: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path / "home",
        mlflow_tracking_uri=url,
        mlflow_username=identity,
        mlflow_password=SecretStr(PASSWORDS[identity]),
        mlflow_promote_password=SecretStr(PASSWORDS[MLFLOW_PROMOTER]),
    )


def _client(settings: Settings, *, as_promoter: bool = False) -> mlflow.MlflowClient:
    configure_mlflow(settings, as_promoter=as_promoter)
    return mlflow.MlflowClient()


def _register_a_version(settings: Settings) -> str:
    with mlflow.start_run(experiment_id=use_experiment(settings)) as run:
        mlflow.log_dict({"kind": "test"}, "model/MLmodel.json")
    version = mlflow.MlflowClient().create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return str(version.version)


def test_only_the_promotion_gate_moves_the_champion(server: tuple[str, str], tmp_path: Path) -> None:
    app_name, url = server
    assert httpx.get(f"{url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL}).status_code == 401

    pipeline = _settings(url, PIPELINE, tmp_path)
    version = _register_a_version(pipeline)
    _client(pipeline).set_registered_model_alias(MODEL, CHALLENGER, version)  # every trained version's

    if app_name == "basic-auth":
        # MLflow's own permissions: EDIT, which registering needs, moves every alias too.
        _client(pipeline).set_registered_model_alias(MODEL, CHAMPION, version)
        return
    # The pipeline is refused by the rule, the API's identity already by MLflow (it may only read).
    for identity, refusal in ((PIPELINE, "only the promotion step"), (SERVE, "Permission denied")):
        with pytest.raises(MlflowException, match=refusal):
            _client(_settings(url, identity, tmp_path)).set_registered_model_alias(MODEL, CHAMPION, version)
    with pytest.raises(MlflowException, match="only an admin may rename"):
        _client(pipeline).rename_registered_model(MODEL, "elsewhere")
    with pytest.raises(MlflowException, match="Permission denied"):  # MANAGE: the admin's, who created it
        _client(pipeline).delete_registered_model(MODEL)

    # The pipeline's own process, signed in as the gate (what ml.registry.promote does).
    _client(pipeline, as_promoter=True).set_registered_model_alias(MODEL, CHAMPION, version)
    served = _client(_settings(url, SERVE, tmp_path)).get_model_version_by_alias(MODEL, CHAMPION)
    assert str(served.version) == version
