"""Seconds per stage of a job, for the job to log with its results: where the time goes."""

from __future__ import annotations

import time


def as_metrics(seconds: dict[str, float]) -> dict[str, float]:
    """Stage seconds as the metrics a run logs: ``seconds_<stage>``."""
    return {f"seconds_{stage}": value for stage, value in seconds.items()}


class Stopwatch:
    """``lap(stage)`` adds the seconds since the last lap (or ``idle``) to ``stage``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now

    def idle(self) -> None:
        """Start the next stage now: the time since the last lap belongs to no stage (waiting)."""
        self._last = time.perf_counter()
