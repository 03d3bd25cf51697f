"""The two storage backends behind one interface, chosen by settings alone.

Embedded: a local folder (``file://``) and a pyiceberg SQL catalog on SQLite.
Full stack: an S3 endpoint (SeaweedFS in the stack and the tests, or any S3) and the SQL
catalog on Postgres. Nothing else in the package knows which one it talks to.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
from pyiceberg.catalog.sql import SqlCatalog

from core.settings import Settings
from core.uris import is_s3


def s3_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg FileIO properties for the S3 endpoint (empty when unused)."""
    props: dict[str, str] = {}
    if settings.s3_endpoint:
        props["s3.endpoint"] = settings.s3_endpoint
    if settings.s3_access_key_id:
        props["s3.access-key-id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key is not None:
        props["s3.secret-access-key"] = settings.s3_secret_access_key.get_secret_value()
    if settings.uses_s3:
        props["s3.region"] = settings.s3_region
    return props


def open_catalog(settings: Settings) -> SqlCatalog:
    """The Iceberg catalog, with the raw namespace created if missing."""
    if settings.catalog_uri.startswith("sqlite:///"):
        Path(settings.catalog_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(settings.warehouse_uri):
        Path(urlparse(settings.warehouse_uri).path).mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog(
        settings.catalog_name,
        uri=settings.catalog_uri,
        warehouse=settings.warehouse_uri,
        **s3_properties(settings),
    )
    catalog.create_namespace_if_not_exists(settings.raw_namespace)
    return catalog


class ObjectStore:
    """A bucket-or-folder addressed by URI, for the landing area.

    Paths handed out and taken back are full URIs (``file:///…`` or
    ``s3://bucket/…``) so they can be recorded as lineage verbatim.
    """

    def __init__(self, root_uri: str, settings: Settings) -> None:
        self.root_uri = root_uri.rstrip("/")
        parsed = urlparse(self.root_uri)
        if is_s3(self.root_uri):
            endpoint = urlparse(settings.s3_endpoint) if settings.s3_endpoint else None
            secret = settings.s3_secret_access_key
            self.fs: pafs.FileSystem = pafs.S3FileSystem(
                access_key=settings.s3_access_key_id,
                secret_key=secret.get_secret_value() if secret else None,
                region=settings.s3_region,
                endpoint_override=endpoint.netloc if endpoint else None,
                scheme=endpoint.scheme if endpoint else "https",
            )
            self._root_path = f"{parsed.netloc}{parsed.path}"
        else:
            self.fs = pafs.LocalFileSystem()
            self._root_path = parsed.path
            Path(self._root_path).mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return f"{self.root_uri}/{key}"

    def _path(self, uri: str) -> str:
        parsed = urlparse(uri)
        return f"{parsed.netloc}{parsed.path}" if is_s3(uri) else parsed.path

    def exists(self, uri: str) -> bool:
        return self.fs.get_file_info(self._path(uri)).type == pafs.FileType.File

    def put_file(self, local: Path, key: str) -> str:
        """Copy a local file to ``key`` (atomically on a folder) and return its URI."""
        dest = self._path(self.uri(key))
        parent = dest.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        # Write under a temporary name first: a reader never sees half a file.
        tmp = f"{dest}.partial"
        with local.open("rb") as src, self.fs.open_output_stream(tmp) as out:
            while chunk := src.read(8 << 20):
                out.write(chunk)
        self.fs.move(tmp, dest)
        return self.uri(key)

    def list_files(self, prefix: str) -> list[str]:
        """URIs of every object under ``prefix``, sorted."""
        base = self._path(self.uri(prefix))
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        root = self._path(self.root_uri)
        return sorted(self.uri(i.path[len(root) + 1 :]) for i in infos if i.type == pafs.FileType.File)

    def open(self, uri: str) -> pa.NativeFile:
        """A seekable reader over the object at ``uri``."""
        return self.fs.open_input_file(self._path(uri))
