"""The lake sink as a child process (for `lab stream replay --start-sink` and the tests), and waiting for it.

SIGTERM stops it cleanly: the sink commits and acks the batch it holds before it exits.
So a caller that wants every published entry in the lake first waits until the sink's
consumer group has been delivered the last one (``wait_for_delivery``), then stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core.errors import LabError
from core.processes import stop
from core.settings import Settings
from ingestion.event_sink import parse_stream_id

if TYPE_CHECKING:
    import redis

DRAIN_SECONDS = 120.0  # how long the sink may take to be delivered the last entry


@contextmanager
def sink_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """`lab stream sink` in a child process with ``settings``; stopped with SIGTERM on the way out.

    Raises:
        LabError: the sink did not end cleanly (its last lines of stderr).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "lab", "stream", "sink"],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process
    finally:
        stop(process, grace=60)
        if process.returncode != 0:
            detail = process.stderr.read().decode()[-1000:] if process.stderr else ""
            raise LabError(f"`lab stream sink` ended with {process.returncode}: {detail.strip()}")


def wait_for_delivery(
    settings: Settings,
    client: redis.Redis,
    process: subprocess.Popen[bytes],
    last_id: str,
    timeout: float = DRAIN_SECONDS,
) -> None:
    """Until the sink's group has been delivered ``last_id`` (or the sink has exited: its exit says why).

    Raises:
        LabError: not delivered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return
        groups = {_text(group["name"]): group for group in client.xinfo_groups(settings.stream_key)}
        group = groups.get(settings.sink_consumer_group)
        delivered = _text(group["last-delivered-id"]) if group else "0-0"
        if parse_stream_id(delivered) >= parse_stream_id(last_id):
            return
        time.sleep(0.2)
    raise LabError(f"the sink had not read entry {last_id} of {settings.stream_key} after {timeout:.0f} s")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
