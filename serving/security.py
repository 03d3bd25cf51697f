"""The admin token's check, apart from the HTTP that carries it (``serving.deps`` asks it)."""

from __future__ import annotations

import secrets

from pydantic import SecretStr


def admin_token_matches(given: str | None, expected: SecretStr | None) -> bool:
    """Whether the X-Admin-Token header's value equals the configured token; with none configured, never.

    Compared as bytes: ``compare_digest`` refuses ``str`` holding anything but
    ASCII (a TypeError, answered 500), and a header may carry any byte.
    """
    token = expected.get_secret_value() if expected else ""
    return bool(token and given and secrets.compare_digest(_raw(given, "latin-1"), _raw(token, "utf-8")))


def _raw(text: str, encoding: str) -> bytes:
    """``text`` as the bytes it came from: a header value is decoded as latin-1, an
    environment variable as UTF-8 with undecodable bytes escaped; never raises."""
    try:
        return text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
