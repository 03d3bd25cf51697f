"""What kind of location a URI names."""

from __future__ import annotations

import re
from urllib.parse import urlparse

S3_SCHEMES = frozenset({"s3", "s3a"})


def is_s3(uri: str) -> bool:
    """True for ``s3://`` and ``s3a://`` locations (SeaweedFS, MinIO, a cloud bucket)."""
    return urlparse(uri).scheme in S3_SCHEMES


# scheme://user:password@ -> scheme://user:***@ ; and libpq's key=value form.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@\s'\"]*):[^@\s'\"]*@", re.IGNORECASE)
_KEY_VALUE_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|\S+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password in a URL or a ``password=`` pair replaced by ``***``.

    For error messages and log lines: drivers (DuckDB's postgres extension,
    libpq) repeat the connection string they were given when they fail.
    """
    return _KEY_VALUE_PASSWORD.sub(r"\g<head>***", _URL_CREDENTIALS.sub(r"\g<head>:***@", text))
