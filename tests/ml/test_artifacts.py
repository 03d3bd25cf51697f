"""Models are data: a registered model that would run code is refused, and nothing of it runs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from core.settings import Settings
from ml.artifacts import ModelRefused, load_model
from ml.tracking import configure_mlflow
from tests.helpers.hostile import RunsACommand


class UnlistedEstimator(ClassifierMixin, BaseEstimator):
    """A harmless estimator whose type is simply not on the project's trusted list."""

    def fit(self, x: object, y: object) -> UnlistedEstimator:
        return self


def _log(settings: Settings, model: object, **kwargs: object) -> str:
    import mlflow

    with mlflow.start_run(experiment_id=configure_mlflow(settings)):
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=[], **kwargs)  # type: ignore[arg-type]
    return str(info.model_uri)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / ".lab", sources_dirs=[])


def test_a_pickled_model_is_refused_without_running(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    marker = tmp_path / "pwned"
    uri = _log(settings, RunsACommand(marker), serialization_format="pickle")

    with pytest.raises(ModelRefused, match="serialised as 'pickle'"):
        load_model(uri)
    assert not marker.exists()

    # The payload is live: MLflow's own loader (pickle allowed, its default) runs it.
    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    with contextlib.suppress(Exception):  # os.system's return value is no model; the command already ran
        mlflow.sklearn.load_model(uri)
    assert marker.exists()


def test_a_skops_model_with_types_it_declares_trusted_is_refused(settings: Settings) -> None:
    import skops.io

    model = Pipeline([("model", UnlistedEstimator())])
    declared = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    # The artifact lists its own type as trusted; MLflow would believe it, this project does not.
    uri = _log(settings, model, serialization_format="skops", skops_trusted_types=declared)
    with pytest.raises(ModelRefused, match=r"does not trust: .*UnlistedEstimator"):
        load_model(uri)
