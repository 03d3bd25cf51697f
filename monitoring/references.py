"""Each monitored model version's reference, from its training run into the warehouse's ``reference`` tables.

The profile (``ml.profile``) was logged with the run that trained the version;
its test-window ROC AUC and 95% interval are the run's metrics. Monitoring
compares every version only with its own reference, so promoting a model
switches the reference with it.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.errors import LabError
from core.names import CHAMPION
from core.settings import Settings
from ml import profile
from ml.tracking import configure_mlflow
from warehouse import reference


def write_references(settings: Settings, versions: Iterable[str]) -> list[str]:
    """Write the reference of every version in ``versions`` (replacing its rows); return them in order.

    Raises:
        LabError: a version is not registered, or its run logged no reference profile
            (trained before profiles were logged: retrain it to monitor it).
    """
    import mlflow

    configure_mlflow(settings)
    client = mlflow.MlflowClient()
    written = []
    for version in sorted(set(versions), key=lambda v: (len(v), v)):
        try:
            run_id = str(client.get_model_version(settings.model_name, version).run_id)
        except mlflow.exceptions.MlflowException:
            missing = f"{settings.model_name} v{version}"
            raise LabError(f"predictions name {missing}, which the registry does not hold") from None
        try:
            shape = mlflow.artifacts.load_dict(f"runs:/{run_id}/{profile.ARTIFACT}")
        except (mlflow.exceptions.MlflowException, OSError):
            raise LabError(
                f"{settings.model_name} v{version} (run {run_id}) logged no {profile.ARTIFACT}: retrain to monitor it"
            ) from None
        metrics = client.get_run(run_id).data.metrics
        rows = profile.reference_rows(shape)
        rows["reference_models"] = [
            (run_id, metrics.get("test_roc_auc"), metrics.get("test_roc_auc_lo"), metrics.get("test_roc_auc_hi"))
        ]
        reference.write_version(settings, version, rows)
        written.append(version)
    return written


def champion_version(settings: Settings) -> str | None:
    """The registry's champion version, or None before the first promotion."""
    import mlflow

    configure_mlflow(settings)
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None
