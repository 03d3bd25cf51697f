"""Platt scaling on the validation window: decided by time inside it, loaded as data, compiled exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from core.settings import Settings
from ml import factories
from ml.artifacts import TRUSTED_TYPES, load_model
from ml.data import DATE, LABEL, TrainingSet, split
from ml.tracking import configure_mlflow
from serving.compiled import compile_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")


def _fitted(data: TrainingSet) -> object:
    pipeline = factories.gradient_boosting(data.categorical, data.numeric, min_samples_leaf=50)
    return factories.fit(pipeline, *data.xy(data.train), *data.xy(data.validation))


def _later_months_half_as_late(frame: pd.DataFrame, after: str) -> pd.DataFrame:
    """Half the late flights from ``after`` on become on time: the old probabilities are now too high."""
    frame = frame.copy()
    later = (frame[DATE] >= pd.Timestamp(after).date()) & frame[LABEL]
    frame.loc[later[later].index[::2], LABEL] = False
    return frame


def test_calibration_is_chosen_when_later_days_say_so(mart: Callable[..., pd.DataFrame]) -> None:
    data = split(_later_months_half_as_late(mart(), "2013-09-01"), 2, 2)
    pipeline = _fitted(data)
    x_val, y_val = data.xy(data.validation)
    raw_val = factories.raw_score(pipeline, x_val)
    check = factories.calibration_check(raw_val, y_val, data.validation[DATE].to_numpy())
    assert check.fitted_until < data.windows.validation_end
    assert check.calibrate and check.log_loss_platt < check.log_loss_as_is
    calibrated = factories.platt_scaled(pipeline, raw_val, y_val)
    # The calibration CalibratedClassifierCV's own fit builds, scoring the rows again: the same estimator.
    reference = CalibratedClassifierCV(FrozenEstimator(pipeline[-1]), method="sigmoid")
    reference.fit(pipeline[:-1].transform(x_val), y_val)
    ours = calibrated[-1]
    assert vars(ours).keys() == vars(reference).keys()
    np.testing.assert_array_equal(ours.classes_, reference.classes_)
    assert ours.n_features_in_ == reference.n_features_in_
    ((mine,), (theirs,)) = (c.calibrated_classifiers_ for c in (ours, reference))
    assert mine.estimator is ours.estimator and theirs.estimator is reference.estimator
    assert (mine.method, list(mine.classes)) == (theirs.method, list(theirs.classes))
    ((a,), (b,)) = (mine.calibrators, theirs.calibrators)
    assert (a.a_, a.b_) == (b.a_, b.b_)
    # Monotone: the ranking (and so ROC AUC) is the model's own; only the probabilities move.
    before, after = pipeline.predict_proba(x_val)[:, 1], calibrated.predict_proba(x_val)[:, 1]
    assert (np.diff(after[np.argsort(before)]) >= 0).all()
    assert abs(after.mean() - y_val.mean()) < abs(before.mean() - y_val.mean())
    # A run scores each window once (raw_score) and derives both probabilities from it: the same numbers.
    np.testing.assert_allclose(factories.proba_from_raw(pipeline, raw_val), before, rtol=0, atol=1e-12)
    np.testing.assert_allclose(factories.proba_from_raw(calibrated, raw_val), after, rtol=0, atol=1e-12)


def test_a_calibrated_model_loads_as_data_and_compiles_exactly(
    mart: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    import mlflow
    from mlflow.models import infer_signature

    data = split(mart(), 2, 2)
    pipeline = _fitted(data)
    x_val, y_val = data.xy(data.validation)
    calibrated = factories.platt_scaled(pipeline, factories.raw_score(pipeline, x_val), y_val)
    # The two calibration types are exactly what calibration adds to what the project trusts.
    plain_types = set(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))
    added = set(skops.io.get_untrusted_types(data=skops.io.dumps(calibrated))) - plain_types
    assert added == {"sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration"}
    assert added <= set(TRUSTED_TYPES)

    settings = Settings(home=tmp_path / ".lab", sources_dirs=[])
    x_test, _ = data.xy(data.test)
    with mlflow.start_run(experiment_id=configure_mlflow(settings)):
        info = mlflow.sklearn.log_model(
            calibrated,
            name="model",
            signature=infer_signature(x_test.head(5), calibrated.predict_proba(x_test.head(5))[:, 1]),
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=[],
        )
    loaded = load_model(info.model_uri).pipeline
    expected = calibrated.predict_proba(x_test)[:, 1]
    np.testing.assert_array_equal(loaded.predict_proba(x_test)[:, 1], expected)

    compiled = compile_pipeline(loaded, data.categorical, data.numeric)
    assert compiled is not None and compiled.platt is not None
    rows = [{k: (None if v != v else v) for k, v in row.items()} for row in x_test.to_dict("records")]
    got = compiled.predict_proba(compiled.encode(rows, data.categorical, data.numeric))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # And the Platt numbers matter: without them the compiled path would give the uncalibrated model.
    assert np.abs(got - pipeline.predict_proba(x_test)[:, 1]).max() > 1e-3
