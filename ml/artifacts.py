"""Models are data, never code: a registered model is loaded only from its skops file.

MLflow loads a model in whatever format its artifact declares, pickle included,
and takes skops' trusted-type list from the artifact too: a model anyone could
register could run code in the process that loads it. Here the artifact must
be a scikit-learn model in the skops format, its types must all be on the list
this module declares (the one training writes), and the object must be a
fitted Pipeline. Anything else is refused with the reason, before any of its
bytes are deserialised by anything but skops' own type-checking loader.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.errors import LabError

# scikit-learn's own types that skops does not trust by default, all found in a
# pipeline this project fits; training logs the model with this list and loading
# trusts nothing more. The two ``sklearn.calibration`` ones are what Platt scaling
# on the validation window adds (``ml.factories.platt_scaled``): the private holder of
# a frozen model with its calibrator, and the calibrator itself (two floats).
# Both are plain data to skops; without them a calibrated model could not load.
TRUSTED_TYPES = [
    "functools.partial",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
]
SKOPS = "skops"


class ModelRefused(LabError):
    """A registered model that will not be loaded: not a skops scikit-learn Pipeline of trusted types."""


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded model and what its artifact declares about its input."""

    uri: str
    pipeline: Any  # a fitted sklearn Pipeline
    input_names: list[str]  # the logged signature's input columns, in order
    example: list[dict[str, Any]]  # the logged input example: reference rows to score before serving


def load_model(model_uri: str) -> ModelArtifact:
    """Load ``model_uri`` (``models:/<name>/<version>`` or a run's model URI) safely.

    Raises:
        ModelRefused: the artifact is not a skops-serialised scikit-learn Pipeline
            made only of trusted types.
    """
    import mlflow
    import skops.io
    from sklearn.pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="lab-model-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch))
        mlmodel = _mlmodel(local, model_uri)
        flavor = mlmodel.get("flavors", {}).get("sklearn")
        if not isinstance(flavor, dict):
            raise ModelRefused(f"{model_uri} is not a scikit-learn model")
        serialisation = flavor.get("serialization_format", "pickle")
        if serialisation != SKOPS:
            raise ModelRefused(f"{model_uri} is serialised as {serialisation!r}; only {SKOPS} models are loaded")
        path = (local / str(flavor.get("pickled_model", ""))).resolve()
        if not path.is_file() or not path.is_relative_to(local.resolve()):
            raise ModelRefused(f"{model_uri} names no model file inside its artifact")
        try:
            untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
        except Exception as exc:  # a malformed file: skops could not even list its types
            raise ModelRefused(f"{model_uri} is not a readable skops file: {exc}") from None
        if untrusted:
            raise ModelRefused(f"{model_uri} holds types this project does not trust: {', '.join(untrusted[:5])}")
        pipeline = skops.io.load(path, trusted=TRUSTED_TYPES)
        example = _example_rows(local, mlmodel)
    if not isinstance(pipeline, Pipeline):
        raise ModelRefused(f"{model_uri} is a {type(pipeline).__name__}, not a scikit-learn Pipeline")
    return ModelArtifact(model_uri, pipeline, _input_names(mlmodel, model_uri), example)


def _mlmodel(local: Path, model_uri: str) -> dict[str, Any]:
    """The artifact's ``MLmodel`` description (plain YAML, read safely)."""
    try:
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelRefused(f"{model_uri} has no readable MLmodel file ({exc})") from None
    if not isinstance(mlmodel, dict):
        raise ModelRefused(f"{model_uri} has no readable MLmodel file")
    return mlmodel


def _input_names(mlmodel: dict[str, Any], model_uri: str) -> list[str]:
    """The logged signature's input column names."""
    try:
        return [str(column["name"]) for column in json.loads(mlmodel["signature"]["inputs"])]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelRefused(f"{model_uri} has no input signature ({exc!r})") from None


def _example_rows(local: Path, mlmodel: dict[str, Any]) -> list[dict[str, Any]]:
    """The input example MLflow saved beside the model (JSON, pandas ``split`` orient), as rows."""
    info = mlmodel.get("saved_input_example_info") or {}
    path = (local / str(info.get("artifact_path", ""))).resolve()
    if not info or not path.is_file() or not path.is_relative_to(local.resolve()):
        return []
    try:
        data = json.loads(path.read_text())
        return [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]
    except (KeyError, TypeError, ValueError):
        return []
