"""The host name Airflow records for a task run by one of the stack's Celery workers.

Both workers share this machine, so the machine's name cannot tell them apart.
Airflow asks ``[core] hostname_callable`` instead (the worker's environment points
it here), and each task instance then names its worker as Celery does:
``worker-1@<host>``. In compose every worker is its own container, with its own name.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    node = os.environ.get("LAB_STACK_WORKER")
    return f"{node}@{socket.gethostname()}" if node else socket.getfqdn()
