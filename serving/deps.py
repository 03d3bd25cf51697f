"""What the routes depend on: the long-lived services, and the admin-token check."""

from __future__ import annotations

import gc
import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from core.settings import Settings
from serving.features import OnlineFeatures
from serving.model_store import ModelStore
from serving.prediction_log import PredictionLog
from serving.predictions import predict_flights
from serving.schemas import FlightRequest, Prediction, ReloadResult


class Services:
    """The long-lived things a request needs; built once per app, started and stopped by its lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = ModelStore(settings)
        self.features: OnlineFeatures | None = None
        self.log: PredictionLog | None = None

    def start(self) -> None:
        """Open the prediction log, load the online features and the champion, then follow the alias."""
        from ml.tracking import configure_mlflow

        configure_mlflow(self.settings)
        self.log = PredictionLog(self.settings.prediction_log_url)
        self.features = OnlineFeatures.load(self.settings)
        self.models.reload()
        _settle_heap()
        if self.settings.serve_poll_seconds > 0:
            self.models.start_polling(self.settings.serve_poll_seconds)

    def stop(self) -> None:
        """Stop following the alias and drain the prediction log."""
        self.models.stop()
        if self.log is not None:
            self.log.close()  # drains the buffer: nothing answered goes unlogged

    def reload(self) -> ReloadResult:
        """Load the champion (if it changed) and the latest online features now."""
        old, new = self.models.reload()
        self.features = OnlineFeatures.load(self.settings)
        _settle_heap()
        return ReloadResult(previous_version=old, version=new, features_version=self.features.version)

    def predict(self, flights: list[FlightRequest]) -> list[Prediction]:
        """Answer for ``flights``: one read of the model and of the features serves the whole request."""
        assert self.features is not None and self.log is not None
        return predict_flights(flights, self.models.current, self.features, self.log, self.settings.decision_threshold)


def _settle_heap() -> None:
    """Move what is loaded so far out of the garbage collector's sight.

    The online features are a great many long-lived tracked objects; left
    tracked, every full collection walks them all, a pause some unlucky request
    waits out. Frozen objects are never scanned; without reference cycles they
    are still freed once unreferenced (e.g. after a features reload).
    """
    gc.collect()
    gc.freeze()


def get_services(request: Request) -> Services:
    """The app's services, set on ``app.state`` by its lifespan."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def require_admin_token(services: ServicesDep, x_admin_token: Annotated[str | None, Header()] = None) -> None:
    """401 unless X-Admin-Token equals the configured admin token (with none configured, always 401)."""
    expected = services.settings.admin_token.get_secret_value() if services.settings.admin_token else ""
    if not expected or not x_admin_token or not secrets.compare_digest(x_admin_token, expected):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid X-Admin-Token header is required")
