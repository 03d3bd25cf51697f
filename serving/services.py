"""The API's runtime: the served model and features, swapped together, and the prediction log; built once per app."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio.to_thread
from fastapi import HTTPException, status

from core.errors import LabError
from core.settings import Settings
from ml.artifacts import ModelRefused
from serving.features import OnlineFeatures
from serving.model_store import ModelStore, ServedModel
from serving.prediction_log import LogUnavailable, PredictionLog
from serving.predictions import Watermark, predict_flights
from serving.schemas import FlightRequest, Prediction, ReloadResult
from serving.stream import StreamFollower, StreamStatus, not_following
from warehouse.online import FeaturesUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What answers a request: one model version and one feature set, swapped together."""

    model: ServedModel
    features: OnlineFeatures


@dataclass(frozen=True)
class Refusal:
    """The last model version that was not allowed to serve, and why."""

    version: str
    reason: str
    at: datetime


class Services:
    """The long-lived things a request needs; built once per app, started and stopped by its lifespan.

    A request reads ``snapshot`` once and uses that (model, features) pair for
    everything it does, so every answer names the version that produced it.
    A reload loads the new features and the new model first and then swaps
    both in one assignment; reloads (the admin route, the alias poller) take
    turns on one lock and never block a request.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.models = ModelStore(settings)
        self.snapshot: Snapshot | None = None
        self.refusal: Refusal | None = None
        self.features_missing: str | None = None  # why nothing serves yet, when it is the features
        self.log: PredictionLog | None = None
        self.follower: StreamFollower | None = None  # with LAB_SERVE_FOLLOW_STREAM, once features are loaded
        self._reloading = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        """Open the prediction log, load the features and the champion, then follow the alias.

        The log needs no database to open: until it has one it spools.
        """
        from ml.tracking import configure_mlflow

        configure_mlflow(self.settings)
        self.log = PredictionLog.from_settings(self.settings)
        try:
            self.reload()
        except FeaturesUnavailable as exc:
            # Up but not ready (503) until a build publishes features and a reload
            # (the admin route, or the alias poller) loads them.
            log.error("not ready: %s", exc)
        if self.settings.serve_poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="champion-poller", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        """Stop following the alias and drain the prediction log."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        if self.follower is not None:
            self.follower.stop()
        if self.log is not None:
            # Bounded by LAB_PREDICTION_LOG_DRAIN_SECONDS: what the database does not
            # take by then is spooled, so nothing answered goes unlogged.
            self.log.close()

    def reload(self, *, features: bool = True) -> ReloadResult:
        """Load the champion (if it changed) and, with ``features``, the latest online features; swap both at once.

        A champion that fails its checks is refused (logged, kept in
        ``refusal``) and the version already serving goes on serving. Features
        that cannot be loaded change nothing: the error is raised before the swap.

        Raises:
            FeaturesUnavailable: no published features, or an artifact that fails its checks.
        """
        with self._reloading:
            current = self.snapshot
            try:
                new_features = OnlineFeatures.load(self.settings) if features or current is None else current.features
            except FeaturesUnavailable as exc:
                self.features_missing = str(exc) if current is None else None
                log.error("online features not loaded (%s); still serving %s", exc, _features_version(current))
                raise
            if new_features is not (current.features if current is not None else None):
                self._follow(new_features, current)
            self.features_missing = None
            version = self.models.champion_version()
            model = current.model if current is not None and current.model.version == version else None
            if model is None and not (self.refusal is not None and self.refusal.version == version):
                try:
                    model = self.models.load(version)
                except ModelRefused as refused:
                    self.refusal = Refusal(version, str(refused), datetime.now(UTC))
                    log.error("refused v%s: %s; still serving v%s", version, refused, _version(current))
            model = model or (current.model if current is not None else None)
            if model is not None:
                self.snapshot = Snapshot(model, new_features)  # the one switch
                _settle_heap()
            if model is not None and current is not None and model is not current.model:
                log.info("serving %s v%s (was v%s)", model.name, model.version, current.model.version)
            return ReloadResult(
                previous_version=_version(current),
                version=model.version if model is not None else None,
                features_version=new_features.version,
            )

    def _follow(self, features: OnlineFeatures, current: Snapshot | None) -> None:
        """Have the stream's reader apply events to ``features`` (caught up first, when others are serving).

        Raises:
            FeaturesUnavailable: Redis does not answer, so the new features cannot be
                brought up to the events already served; the current ones stay.
        """
        if not self.settings.serve_follow_stream:
            return
        if self.follower is None:
            self.follower = StreamFollower(self.settings, features, features.stream_after)
            self.follower.start()
            return
        try:
            self.follower.adopt(features, features.stream_after)
        except LabError as exc:
            log.error("features %s not loaded: %s; still serving %s", features.version, exc, _features_version(current))
            raise FeaturesUnavailable(
                f"features {features.version} cannot be brought up to the stream's position ({exc})"
            ) from None

    async def wait_for_stream(self, entry_id: str | None) -> None:
        """Wait (bounded) until this worker has applied stream entry ``entry_id``; at once without one or a follower."""
        follower = self.follower
        if entry_id is None or follower is None or follower.reached(entry_id):
            return
        await anyio.to_thread.run_sync(follower.wait_for, entry_id, self.settings.serve_stream_wait_seconds)

    def stream_status(self) -> StreamStatus:
        return self.follower.status() if self.follower is not None else not_following()

    def _poll(self) -> None:
        """Follow the champion alias in the background; keep serving whatever the registry does."""
        while not self._stop.wait(self.settings.serve_poll_seconds):
            try:
                self.reload(features=False)
            except FeaturesUnavailable:
                pass  # logged by reload; retried on the next poll
            except Exception:
                log.exception("champion poll failed; still serving v%s", _version(self.snapshot))

    def predict(self, flights: list[FlightRequest], *, batch: bool = False) -> list[Prediction]:
        """Answer for ``flights``: one read of the snapshot serves the whole request.

        Raises:
            HTTPException: 503 while no model may serve (none loaded yet, or refused), and
                while the prediction log cannot take the answers' rows: an answer that
                cannot be logged is not given.
        """
        snapshot = self.snapshot
        prediction_log = self.log
        if snapshot is None or prediction_log is None:
            detail = self.features_missing or "no model is being served yet; see /ready"
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail)
        follower = self.follower
        # Read before the features are assembled: they include at least this much of the stream.
        watermark = Watermark(snapshot.features.events_through, follower.position if follower is not None else None)
        try:
            return predict_flights(
                flights,
                snapshot.model,
                snapshot.features,
                prediction_log,
                self.settings.decision_threshold,
                watermark,
                batch=batch,
            )
        except LogUnavailable as exc:  # record() takes all the request's rows or none
            raise _not_logged(str(exc)) from None


def _not_logged(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        f"the answer cannot be logged ({reason}); see /ready",
        headers={"Retry-After": "1"},
    )


def _version(snapshot: Snapshot | None) -> str | None:
    return snapshot.model.version if snapshot is not None else None


def _features_version(snapshot: Snapshot | None) -> str | None:
    return snapshot.features.version if snapshot is not None else None


def _settle_heap() -> None:
    """Move what is loaded so far out of the garbage collector's sight.

    The online features are a great many long-lived tracked objects; left
    tracked, every full collection walks them all, a pause some unlucky request
    waits out. Frozen objects are never scanned; without reference cycles they
    are still freed once unreferenced (e.g. after a features reload).
    """
    gc.collect()
    gc.freeze()
