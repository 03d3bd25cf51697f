"""The tuning search chooses on the validation window and never reads the test window."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import LabError
from core.settings import Settings
from ml import factories
from ml.data import LABEL, TrainingSet, split
from ml.tuning import CONFIGURATIONS, OPTIONAL_FEATURE, SPACE, Tuned, configurations, load_tuned, search

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = 2  # settings; 4 candidates: enough to have a choice, quick on the synthetic mart


def _scrambled_test_window(data: TrainingSet) -> pd.DataFrame:
    """The same frame with the test window's labels and features shuffled independently: noise."""
    frame = data.frame.copy()
    test = data.test.index
    rng = np.random.default_rng(5)
    for column in [LABEL, *data.features]:
        frame.loc[test, column] = rng.permutation(frame.loc[test, column].to_numpy())
    return frame


class _ScoresOnTest(TrainingSet):
    """A search that reads the test window: its "validation" is the test window."""

    @property
    def validation(self) -> pd.DataFrame:
        return self.test


def _evidence(tuned: Tuned) -> list[tuple[object, ...]]:
    return [(c.params, c.month_of_year, c.validation_roc_auc, c.n_iter) for c in tuned.candidates]


def test_the_search_never_reads_the_test_window(mart: Callable[..., pd.DataFrame]) -> None:
    data = split(mart(), 2, 2)
    scrambled = split(_scrambled_test_window(data), 2, 2)
    assert not scrambled.test[LABEL].equals(data.test[LABEL])  # the test window really changed
    assert scrambled.validation.equals(data.validation) and scrambled.train.equals(data.train)

    tuned, on_scrambled = search(data, BUDGET), search(scrambled, BUDGET)
    assert len(tuned.candidates) == 2 * BUDGET
    assert (tuned.params, tuned.excluded_features) == (on_scrambled.params, on_scrambled.excluded_features)
    assert _evidence(tuned) == _evidence(on_scrambled)  # every validation score identical, to the bit
    assert not any(key.startswith("test") for key in tuned.windows)

    # The same assertion catches a search that does read the test window (one setting is enough to show it).
    leaky = _ScoresOnTest(data.frame, data.categorical, data.numeric, data.windows)
    leaky_scrambled = _ScoresOnTest(scrambled.frame, scrambled.categorical, scrambled.numeric, scrambled.windows)
    assert _evidence(search(leaky, 1)) != _evidence(search(leaky_scrambled, 1))


def test_the_search_picks_the_best_validation_score(mart: Callable[..., pd.DataFrame]) -> None:
    tuned = search(split(mart(months=8), 2, 2), BUDGET)
    best = max(tuned.candidates, key=lambda c: c.validation_roc_auc)
    assert tuned.params == best.params
    assert tuned.excluded_features == ([] if best.month_of_year else [OPTIONAL_FEATURE])
    # Each setting is tried without and with month_of_year, so that choice is made at equal hyperparameters.
    assert [c.month_of_year for c in tuned.candidates] == [False, True] * BUDGET
    assert Tuned.from_json(tuned.to_json()) == tuned


def test_configurations_are_the_old_defaults_then_seeded_draws() -> None:
    drawn = configurations(CONFIGURATIONS, seed=13)
    assert drawn[0] == {k: factories.BOOSTING_DEFAULTS[k] for k in factories.TUNABLE}
    assert drawn == configurations(CONFIGURATIONS, seed=13) != configurations(CONFIGURATIONS, seed=14)
    assert len({json.dumps(d, sort_keys=True) for d in drawn}) == CONFIGURATIONS
    assert all(d[k] in SPACE[k] for d in drawn for k in SPACE)
    whole = int(np.prod([len(values) for values in SPACE.values()]))
    assert len({json.dumps(d, sort_keys=True) for d in configurations(whole)}) == whole
    with pytest.raises(LabError, match=f"a budget of {whole + 1} settings is more than the {whole}"):
        configurations(whole + 1)


def test_the_committed_configuration_is_the_searchs_own_choice() -> None:
    tuned, sha256 = load_tuned(Settings(sources_dirs=[]))
    assert len(sha256) == 64
    assert len(tuned.candidates) == 2 * tuned.budget and tuned.seed == 13
    best = max(tuned.candidates, key=lambda c: c.validation_roc_auc)
    assert tuned.params == best.params
    assert tuned.excluded_features == ([] if best.month_of_year else [OPTIONAL_FEATURE])
    # Chosen on validation; the test window it left alone starts after it.
    assert tuned.windows["validation_end"] < "2013-11-01" and "test_start" not in tuned.windows
    assert tuned.mart["prediction_horizon_minutes"] == 120


def test_a_missing_or_foreign_configuration_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / ".lab", sources_dirs=[], tuned_config_path=tmp_path / "tuned.json")
    with pytest.raises(LabError, match="run `lab tune`"):
        load_tuned(settings)
    committed, _ = load_tuned(Settings(sources_dirs=[]))
    committed.params["max_depth"] = 3
    (tmp_path / "tuned.json").write_text(committed.to_json())
    with pytest.raises(LabError, match="does not tune: max_depth"):
        load_tuned(settings)
