"""Hostile artifacts for the trust-boundary tests: things an attacker could register or send."""

from __future__ import annotations

import os
from pathlib import Path

from core.settings import Settings


class RunsACommand:
    """Unpickling this runs ``touch <marker>``: the attack a pickle artifact allows."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def register_code_running_model(settings: Settings, marker: Path, params: dict[str, str] | None = None) -> str:
    """Register, as a new version of the settings' model, a pickle whose load would create ``marker``.

    Returns the new version. ``params`` go on its run (the gate reads its evaluation window there).
    """
    import mlflow

    from ml.tracking import configure_mlflow

    # The lab's experiment: its artifacts go under the settings' home, not ./mlruns.
    with mlflow.start_run(experiment_id=configure_mlflow(settings)):
        if params:
            mlflow.log_params(params)
        info = mlflow.sklearn.log_model(
            RunsACommand(marker),  # type: ignore[arg-type]
            name="model",
            serialization_format="pickle",
            pip_requirements=[],
            registered_model_name=settings.model_name,
        )
    return str(info.registered_model_version)
