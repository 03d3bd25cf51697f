"""The landing area: raw files copied into the object store under their content's SHA-256."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from ingestion.declarations import SourceDeclaration
from ingestion.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandedFile:
    """A raw file copied into the landing area, addressed by its content."""

    uri: str
    sha256: str
    name: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def land(decl: SourceDeclaration, store: ObjectStore, files: list[Path]) -> list[LandedFile]:
    """Copy a source's input ``files`` to the landing area, content-addressed.

    The key is ``<source>/<sha256>/<file name>``: the same bytes land once, however
    often they are uploaded, and a changed file lands beside the old one.
    """
    landed = []
    for path in files:
        sha = sha256_of(path)
        key = f"{decl.name}/{sha}/{path.name}"
        uri = store.uri(key)
        if not store.exists(uri):
            store.put_file(path, key)
        else:
            log.info("landing: %s already present", uri)
        landed.append(LandedFile(uri=uri, sha256=sha, name=path.name))
    return landed
