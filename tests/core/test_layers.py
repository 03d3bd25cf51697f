"""The layer contract (``make lint`` runs it) holds, and does fail when a lower layer imports a higher one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from core.settings import PROJECT_ROOT

CONFIG = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_of_the_packages(tmp_path: Path) -> Path:
    """The project's packages and its import-linter settings, in a folder of their own."""
    for package in CONFIG["root_packages"]:
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pyproject.toml").write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    return tmp_path


def _lint(folder: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working directory first on sys.path: the copy, not the project.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=folder, capture_output=True, text=True, check=False, timeout=300
    )


def test_the_layers_contract_holds_and_catches_an_upward_import(tmp_path: Path) -> None:
    copy = _copy_of_the_packages(tmp_path)
    clean = _lint(copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "2 kept, 0 broken" in clean.stdout

    # core is the floor: reaching up into ingestion, even inside a function, breaks the contract.
    with (copy / "core" / "months.py").open("a") as module:
        module.write("\n\ndef _upward() -> None:\n    from ingestion.loader import ingest  # noqa: F401\n")
    broken = _lint(copy)
    assert broken.returncode != 0
    assert "BROKEN" in broken.stdout and "core.months -> ingestion.loader" in broken.stdout


def test_the_stack_layer_is_enforced(tmp_path: Path) -> None:
    """The stack runtime may not reach into what it deploys, nor may the services import the stack."""
    copy = _copy_of_the_packages(tmp_path)
    # The stack running the trainer itself: the forbidden contract catches it.
    with (copy / "stack" / "health.py").open("a") as module:
        module.write("\n\ndef _runs_code() -> None:\n    from ml.train import train  # noqa: F401\n")
    # A service depending on the runtime that starts it: the layers catch it.
    with (copy / "serving" / "limits.py").open("a") as module:
        module.write("\n\ndef _upward() -> None:\n    from stack.runtime import Stack  # noqa: F401\n")
    broken = _lint(copy)
    assert broken.returncode != 0
    assert "0 kept, 2 broken" in broken.stdout, broken.stdout
    assert "stack.health -> ml.train" in broken.stdout
    assert "serving.limits -> stack.runtime" in broken.stdout
