"""What kind of location a URI names."""

from __future__ import annotations

from urllib.parse import urlparse

S3_SCHEMES = frozenset({"s3", "s3a"})


def is_s3(uri: str) -> bool:
    """True for ``s3://`` and ``s3a://`` locations (MinIO, or moto's server in tests)."""
    return urlparse(uri).scheme in S3_SCHEMES
