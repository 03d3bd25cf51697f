"""Source declarations written where a test's settings look for them, then loaded as the lab would."""

from __future__ import annotations

import textwrap

from core.settings import Settings
from ingestion.declarations import SourceDeclaration, load_declarations


def declare(settings: Settings, text: str, source: str = "events") -> SourceDeclaration:
    """Write ``text`` (dedented) as ``custom.yml`` in the settings' first sources folder; the ``source`` it declares."""
    folder = settings.sources_dirs[0]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "custom.yml").write_text(textwrap.dedent(text))
    return load_declarations(settings.sources_dirs)[source]
