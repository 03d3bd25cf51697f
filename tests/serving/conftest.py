"""Fixtures of the serving tests: the session's trained model, promoted and served."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from core.settings import Settings

if TYPE_CHECKING:
    from ml.train import TrainResult


@pytest.fixture(scope="module")
def served(
    trained: tuple[Settings, TrainResult], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, TrainResult]:
    """The session's model promoted to champion; settings that serve it, and its training result.

    Per module: each module promotes it again and has a prediction log (SQLite) of its own. No alias
    poller (``serve_poll_seconds`` 0): an app serves what it loaded at start-up or on a reload.
    """
    from ml.registry import promote

    settings, result = trained
    promote(settings, result.model_version)
    log_url = f"sqlite:///{tmp_path_factory.mktemp('serve') / 'predictions.db'}"
    return settings.model_copy(update={"prediction_log_url": log_url, "serve_poll_seconds": 0.0}), result
