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


def http_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a health check (no answer within 3 s, or not 200), or None when it is healthy."""
    try:
        response = httpx.get(url, timeout=3)
    except httpx.HTTPError as exc:
        return f"{url}: {type(exc).__name__}"
    return None if response.status_code == 200 else f"{url}: HTTP {response.status_code}"


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
