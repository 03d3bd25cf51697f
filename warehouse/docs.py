"""Render the dbt docs site in headless Chromium: a screenshot of the lineage graph.

The static site (``dbt docs generate --static``) is one self-contained HTML file,
so it renders from disk with no server. Chromium comes from Debian (``chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from core.errors import LabError

# Flags for a sandbox with no network: no first-run, sync or component traffic.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=20000",  # let the page's JavaScript lay the graph out
]


def lineage_url(site: Path, model_unique_id: str | None = None) -> str:
    """The docs page that opens the lineage graph (of one model, or the whole project)."""
    page = f"model/{model_unique_id}" if model_unique_id else "overview"
    return f"{site.resolve().as_uri()}#!/{page}?g_v=1"


def render(url: str, screenshot: Path, chromium: str = "chromium") -> str:
    """Save a screenshot of ``url`` and return its rendered DOM."""
    binary = shutil.which(chromium)
    if binary is None:
        raise LabError(f"{chromium} is not installed (apt-get install chromium, or `make system-deps`)")
    with tempfile.TemporaryDirectory() as profile:
        common = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        subprocess.run([*common, f"--screenshot={screenshot}", url], check=True, capture_output=True, timeout=120)
        dom = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=120)
    return dom.stdout
