"""The one retry policy: a few attempts, with jittered exponential backoff between them.

Iceberg commits (the loader's data snapshot and its quarantine slice) lose races
to concurrent writers; the jitter keeps two losers from colliding again in step.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

BASE_DELAY = 0.05  # seconds before the first retry, doubled each time
MAX_DELAY = 2.0


def backoff_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped, jittered."""
    return min(MAX_DELAY, BASE_DELAY * 2**attempt) * (0.5 + random.random())


def with_retries(
    attempt: Callable[[int], T],
    *,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    what: str,
) -> T:
    """Call ``attempt(n)`` for n = 1, 2, ... until it returns, at most ``retries + 1`` times.

    Only the exceptions in ``retry_on`` are retried; the last one is raised as is.
    ``attempt`` receives its number so it can report how many it took.
    """
    number = 1
    while True:
        try:
            return attempt(number)
        except retry_on as exc:
            if number > retries:
                raise
            delay = backoff_delay(number)
            log.warning("%s: %s (attempt %d); retrying in %.2fs", what, type(exc).__name__, number, delay)
            time.sleep(delay)
            number += 1
