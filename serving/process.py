"""Run the API as a real server process (for the demo, the tests and the bench)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from core.processes import free_port, stop, wait_until_answering
from core.settings import Settings

__all__ = ["api_server", "free_port"]


@contextmanager
def api_server(
    settings: Settings, port: int | None = None, timeout: float = 120.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`lab serve` in a child process; yields (base URL, process) once /ready answers.

    Stops it with SIGTERM (a graceful shutdown that flushes the prediction log).
    """
    port = port or free_port()
    env = {**os.environ, **settings.to_env()}
    process = subprocess.Popen(
        [sys.executable, "-m", "lab", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, f"{url}/ready", timeout, "the API")
        yield url, process
    finally:
        stop(process, grace=30)
