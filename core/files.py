"""Durable local files: what a crash must not undo once a write has returned."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a file created, renamed or removed in ``directory`` durable (its directory entry, not its bytes)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
