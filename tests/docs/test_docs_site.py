"""The documentation site as a reader meets it: the README a first screen, every page built, the diagram drawn.

The site must render with no network (the machines that build it have none), so the
architecture diagram is drawn by the vendored mermaid; a diagram that never becomes an
<svg> means the script did not load or did not run.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshots" / "docs-architecture.png"
GENERATED = "configuration.md"  # written by `make docs-config`, not by hand


class _Loader(yaml.SafeLoader):
    """mkdocs.yml's own tag (a Python name) read as a plain value."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def _nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_Loader)
    return [page for entry in config["nav"] for page in entry.values()]


def test_readme_is_a_first_screen_with_the_architecture_diagram() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "```mermaid\n" in readme
    for name in ("Iceberg", "MLflow", "FastAPI"):
        assert name in _mermaid(readme)


def _mermaid(text: str) -> str:
    return text.split("```mermaid\n", 1)[1].split("```", 1)[0]


def test_the_site_s_home_draws_the_readme_s_diagram() -> None:
    assert _mermaid((ROOT / "docs" / "index.md").read_text()) == _mermaid((ROOT / "README.md").read_text())


def test_the_readme_lists_every_lab_command_and_make_target() -> None:
    import typer.main

    from lab.main import app

    def commands(group: Any, prefix: str) -> Iterator[str]:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):  # a group of commands (lab lake, lab stack)
                yield from commands(command, f"{prefix} {name}")
            elif not command.hidden:
                yield f"{prefix} {name}"

    readme = (ROOT / "README.md").read_text()
    cli = typer.main.get_command(app)
    missing = [name for name in commands(cli, "lab") if f"| `{name}" not in readme]
    assert not missing
    targets = re.findall(r"^([a-z-]+):.*?## ", (ROOT / "Makefile").read_text(), flags=re.M)
    assert "docs" in targets
    assert not [target for target in targets if f"| `make {target}` |" not in readme]


def test_every_page_in_the_nav_exists_and_every_link_between_pages_resolves() -> None:
    pages = _nav_pages()
    assert GENERATED in pages
    docs = ROOT / "docs"
    missing = [page for page in pages if page != GENERATED and not (docs / page).is_file()]
    assert not missing
    # mkdocs --strict checks these too, but lets a link to the generated page pass until it exists.
    for page in pages:
        if page == GENERATED:
            continue
        for target in re.findall(r"\]\(([a-z_-]+\.md)(?:#[^)]*)?\)", (docs / page).read_text()):
            assert target == GENERATED or (docs / target).is_file(), f"{page} links to {target}"


def test_no_page_sends_the_reader_back_to_the_readme() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        assert "see the readme" not in page.read_text().lower(), page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make docs` (strict), its site copied away and served on a loopback port."""
    subprocess.run(["make", "docs"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    built = tmp_path_factory.mktemp("site") / "site"
    shutil.copytree(ROOT / "site", built)
    handler = functools.partial(_QuietHandler, directory=str(built))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the base class names it `format`
        pass


@pytest.mark.slow
def test_the_architecture_diagram_renders_offline_in_chromium(site: str, tmp_path: Path) -> None:
    from tests.helpers.browser import render_page

    html = urllib.request.urlopen(f"{site}/", timeout=30).read().decode()
    # Material loads mermaid from a CDN for the class `mermaid`; this page uses its own class
    # and the vendored script, so nothing it needs is off this machine.
    assert 'class="mermaid-diagram"' in html and "javascripts/mermaid.min.js" in html
    assert not re.search(r"unpkg\.com|jsdelivr|cdnjs", html)
    svg_text = "Array.from(document.querySelectorAll('div.mermaid-diagram svg')).map(s => s.textContent).join(' ')"
    drawn = " && ".join(f"({svg_text}).includes({name!r})" for name in ("Iceberg", "MLflow", "FastAPI"))
    shot = tmp_path / "docs-architecture.png"
    render_page(f"{site}/", shot, expect="Architecture", until=drawn, element="div.mermaid-diagram")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    SCREENSHOT.write_bytes(data)  # committed: the diagram as the site shows it
