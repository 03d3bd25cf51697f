"""The served model: the registry's champion, swapped atomically when it changes.

A request reads ``store.current`` once and uses that (version, model) pair for
everything it does, so every response names the version that produced it even
while a new champion is being swapped in. Swapping is one reference assignment.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from core.names import CHAMPION
from core.settings import Settings
from serving.compiled import CompiledModel, compile_pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version and what the API reports about it."""

    name: str
    version: str
    run_id: str
    model: Any  # a fitted sklearn Pipeline
    categorical: list[str]
    numeric: list[str]
    metrics: dict[str, float]
    lineage: dict[str, str]
    compiled: CompiledModel | None = None  # the same trees, walked without per-tree overhead

    # Small batches take the compiled walk; larger ones go to sklearn, whose
    # multithreaded per-tree loop spreads its fixed per-call cost over many rows.
    COMPILED_MAX_ROWS = 32

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def predict_proba(self, rows: list[dict[str, Any]]) -> Any:
        """P(late) for feature rows, typed exactly as at training (numerics as float64)."""
        if self.compiled is not None and len(rows) <= self.COMPILED_MAX_ROWS:
            return self.compiled.predict_proba(self.compiled.encode(rows, self.categorical, self.numeric))
        import pandas as pd

        frame = pd.DataFrame(rows, columns=self.features)
        frame[self.numeric] = frame[self.numeric].astype("float64")
        frame[self.categorical] = frame[self.categorical].astype("object")
        return self.model.predict_proba(frame)[:, 1]


class ModelStore:
    """Holds the champion and follows its alias."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._current: ServedModel | None = None
        self._lock = threading.Lock()  # serialises reloads, never reads
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def current(self) -> ServedModel:
        model = self._current
        if model is None:
            raise RuntimeError("no model loaded")
        return model

    @property
    def loaded(self) -> bool:
        return self._current is not None

    def _load(self, version: str) -> ServedModel:
        import mlflow

        client = mlflow.MlflowClient()
        mv = client.get_model_version(self.settings.model_name, version)
        run = client.get_run(str(mv.run_id))
        model = mlflow.sklearn.load_model(f"models:/{self.settings.model_name}/{version}")
        params = run.data.params
        categorical = [f for f in params["categorical_features"].split(",") if f]
        numeric = [f for f in params["numeric_features"].split(",") if f]
        lineage = {k: v for k, v in run.data.tags.items() if k.startswith(("lab.", "mlflow.source.git"))}
        return ServedModel(
            self.settings.model_name,
            str(version),
            str(mv.run_id),
            model,
            categorical,
            numeric,
            dict(run.data.metrics),
            lineage,
            compile_pipeline(model, categorical, numeric),
        )

    def champion_version(self) -> str:
        import mlflow

        alias = mlflow.MlflowClient().get_model_version_by_alias(self.settings.model_name, CHAMPION)
        return str(alias.version)

    def reload(self) -> tuple[str | None, str]:
        """Load the champion if it changed; returns (old version, new version)."""
        with self._lock:
            version = self.champion_version()
            old = self._current.version if self._current else None
            if version != old:
                loaded = self._load(version)
                self._current = loaded  # the atomic switch
                log.info("serving %s v%s (was v%s)", loaded.name, version, old)
            return old, version

    def start_polling(self, every_seconds: float) -> None:
        """Follow the champion alias in the background."""

        def poll() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.reload()
                except Exception:  # keep serving the current model whatever the registry does
                    log.exception("champion poll failed; keeping v%s", getattr(self._current, "version", None))

        self._poller = threading.Thread(target=poll, name="champion-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
