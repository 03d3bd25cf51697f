"""The retrain rules: decay fires first, drift only by importance and with enough predictions, and each says why."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from monitoring.rules import decide


def _month(month: str, **changes: Any) -> dict[str, Any]:
    row = {
        "prediction_month": month,
        "model_version": "3",
        "predictions": 28_000,
        "labelled": 27_000,
        "roc_auc": 0.75,
        "estimated_roc_auc": 0.76,
        "reference_roc_auc_lo": 0.74,
        "performance_decayed": False,
        "monitored_features": 38,
        "drifted_features": 9,
        "drifted_importance_share": 0.2,
        "drift_alert": False,
    }
    return row | changes


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(home=tmp_path)


def test_seasonal_drift_of_little_importance_does_not_retrain(settings: Settings) -> None:
    decision = decide([_month("2013-07"), _month("2013-08")], settings)
    assert not decision.retrain and decision.trigger == "none" and decision.months == ()
    assert "2013-08 v3" in decision.reason and "20% of the model's importance" in decision.reason


def test_decay_is_named_before_drift_in_the_same_run(settings: Settings) -> None:
    rows = [
        _month("2013-07", drift_alert=True, drifted_importance_share=0.7),
        _month("2013-09", performance_decayed=True, roc_auc=0.71),
    ]
    decision = decide(rows, settings)
    assert decision.retrain and decision.trigger == "performance" and decision.months == ("2013-09",)
    assert "live ROC AUC 0.7100 on 27,000 labelled flights is below" in decision.reason


def test_drift_alone_fires_when_it_carries_the_importance(settings: Settings) -> None:
    decision = decide([_month("2013-10", drift_alert=True, drifted_importance_share=0.62)], settings)
    assert decision.retrain and decision.trigger == "drift"
    assert "62% of the model's importance" in decision.reason


def test_too_few_labels_or_predictions_are_said_not_hidden(settings: Settings) -> None:
    decision = decide([_month("2014-01", predictions=88, labelled=85, roc_auc=0.6)], settings)
    assert not decision.retrain
    assert "85 labelled flights (< 1,000): performance cannot alert yet" in decision.reason
    assert "only 88 predictions (< 1,000)" in decision.reason
    assert decide([], settings).reason == "no month of the serving model to judge yet"


def test_the_rules_judge_the_champion_in_its_latest_full_month(settings: Settings) -> None:
    import pandas as pd

    from monitoring.monitor import Monitored

    rows = [
        _month("2013-07", model_version="1", performance_decayed=True),
        _month("2013-12", model_version="1"),
        _month("2014-01", model_version="1", predictions=88, drift_alert=True),
        _month("2013-12", model_version="2", performance_decayed=True),
    ]
    monitored = Monitored(pd.DataFrame(rows), *(pd.DataFrame() for _ in range(3)))
    # v1 serves: July's decay is history, January's 88 flights too few; December is what counts.
    judged = monitored.judged("1", None, settings.monitor_min_predictions)
    assert [(r["prediction_month"], r["model_version"]) for r in judged] == [("2013-12", "1")]
    assert not decide(judged, settings).retrain
    # Asked about July itself, the rule fires; each champion is judged by its own rows.
    assert decide(monitored.judged("1", "2013-07", 1000), settings).retrain
    assert decide(monitored.judged("2", None, 1000), settings).retrain
    assert [r["model_version"] for r in monitored.judged(None, "2013-12", 1000)] == ["1", "2"]
