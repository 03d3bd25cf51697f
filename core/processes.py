"""Child server processes (the API, Airflow): a free port, waiting until they answer, stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int) -> bool:
    """Something accepts TCP connections on ``host:port`` (within a second)."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until_answering(process: subprocess.Popen[bytes], url: str, timeout: float, what: str) -> None:
    """Poll ``url`` until it answers 200.

    Raises:
        RuntimeError: the process exited first.
        TimeoutError: no answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            detail = process.stderr.read().decode()[-2000:] if process.stderr else ""
            raise RuntimeError(f"{what} exited with {process.returncode} before answering {url}: {detail}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes], *, grace: float, group: bool = False) -> None:
    """SIGTERM (to the whole process group if ``group``), then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
