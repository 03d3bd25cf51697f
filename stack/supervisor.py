"""supervisord runs the stack's long-running services: its config, the daemon, and its XML-RPC control.

Every program is `lab stack exec <service>`, which builds the service's
environment and then replaces itself with the service's command, so the
supervisor signals the real process and its config file holds no secret.
Programs never start on their own (``autostart=false``): `lab stack up`
starts them in the service table's order, each once its dependencies answer.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

from core.errors import LabError
from stack.runtime import Stack, base_environment
from stack.services import by_name, start_order


def config_path(stack: Stack) -> Path:
    return stack.root / "supervisord.conf"


def socket_path(stack: Stack) -> Path:
    return stack.root / "supervisor.sock"


def programs(stack: Stack) -> list[str]:
    """The services the supervisor runs: the long-running ones, less servers of the machine's own."""
    state = stack.state()
    skip = {"postgres"} if not state.pg_managed else set()
    if not state.redis_managed:
        skip.add("redis")
    return [s.name for s in start_order() if not s.one_shot and s.name not in skip]


def write_config(stack: Stack) -> None:
    lab = Path(sys.executable).with_name("lab")
    sections = [
        "[unix_http_server]",
        f"file={socket_path(stack)}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={stack.logs / 'supervisord.log'}",
        f"pidfile={stack.root / 'supervisord.pid'}",
        f"directory={stack.root}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{socket_path(stack)}",
        "",
    ]
    for name in programs(stack):
        replicas = by_name(name).replicas
        sections += [
            f"[program:{name}]",
            f"command={lab} stack exec {name} --replica %(process_num)d",
            "process_name=%(program_name)s-%(process_num)d" if replicas > 1 else "process_name=%(program_name)s",
            f"numprocs={replicas}",
            "numprocs_start=1",
            "autostart=false",
            "autorestart=unexpected",
            "startsecs=3",
            # Airflow's components and uvicorn finish their work on SIGTERM within this.
            "stopwaitsecs=60",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={stack.logs / name}%(process_num)s.log"
            if replicas > 1
            else f"stdout_logfile={stack.logs / name}.log",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=1",
            "",
        ]
    stack.logs.mkdir(parents=True, exist_ok=True)
    config_path(stack).write_text("\n".join(sections))


def client(stack: Stack) -> Any:
    """An XML-RPC proxy to the running supervisord (``supervisor`` namespace)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{socket_path(stack)}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


def running(stack: Stack) -> bool:
    if not socket_path(stack).exists():
        return False
    try:
        client(stack).getState()
    except (OSError, xmlrpc.client.Fault):
        return False
    return True


def start_daemon(stack: Stack) -> None:
    """Start supervisord (it daemonizes) with the stack's config, unless it already runs."""
    if running(stack):
        client(stack).reloadConfig()
        return
    write_config(stack)
    supervisord = Path(sys.executable).with_name("supervisord")
    proc = subprocess.run(
        [str(supervisord), "-c", str(config_path(stack))],
        # Its programs (`lab stack exec`) find this stack by its home, and nothing else of the caller's LAB_*.
        env={**base_environment(), "LAB_HOME": str(stack.settings.home)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"supervisord did not start: {(proc.stdout + proc.stderr).strip()[-500:]}")
    deadline = time.monotonic() + 15
    while not running(stack):
        if time.monotonic() > deadline:
            raise LabError(f"supervisord started but does not answer on {socket_path(stack)}")
        time.sleep(0.1)


def processes(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every supervised process by its name (``airflow-worker-1``...), with its state and pid."""
    if not running(stack):
        return {}
    return {info["name"]: info for info in client(stack).getAllProcessInfo()}


def shutdown(stack: Stack) -> None:
    """Stop every process (in reverse start order), then the supervisor itself."""
    if not running(stack):
        return
    rpc = client(stack)
    for name in reversed(programs(stack)):
        with contextlib.suppress(xmlrpc.client.Fault):  # a group already stopped
            rpc.stopProcessGroup(name, True)
    rpc.shutdown()
    deadline = time.monotonic() + 30
    while socket_path(stack).exists() and running(stack):
        if time.monotonic() > deadline:
            raise LabError("supervisord did not shut down within 30 s")
        time.sleep(0.2)
