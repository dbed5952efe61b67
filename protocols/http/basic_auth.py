"""HTTP basic authentication (RFC 7617): the header's credentials, and a cache of good ones.

Every API request carries the user's password (a payment integration posting top-ups, a
script reading meters). Checking a scrypt hash costs ~50 ms of CPU, so a request would cost
that much each time: :class:`CredentialCache` remembers a credential that was right for a
minute, keyed by a SHA-256 of user and password (never the password itself). Only successes
are cached; a wrong password always goes the slow way, through the login throttle.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import OrderedDict
from typing import Final

CACHE_TTL_MS: Final = 60_000
CACHE_ENTRIES: Final = 1024
MAX_HEADER: Final = 4096


class BadCredentials(ValueError):
    """An ``Authorization`` header that is not readable basic credentials."""


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``"Basic b3A6b3Atc2VjcmV0"`` -> ``("op", "op-secret")``; no header -> None."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadCredentials("only HTTP basic authentication is accepted")
    if len(encoded) > MAX_HEADER:
        raise BadCredentials("the credentials are too long")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("the basic credentials are not base64 of UTF-8 text") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user:
        raise BadCredentials("the basic credentials must be user:password")
    return user, password


class CredentialCache:
    """Recently verified (user, password) -> role, for a minute (module docstring)."""

    def __init__(self, ttl_ms: int = CACHE_TTL_MS, entries: int = CACHE_ENTRIES) -> None:
        self._ttl_ms = ttl_ms
        self._entries = entries
        self._known: OrderedDict[bytes, tuple[str, int]] = OrderedDict()

    @staticmethod
    def _key(user: str, password: str) -> bytes:
        return hashlib.sha256(f"{user}\0{password}".encode("utf-8", "surrogatepass")).digest()

    def get(self, user: str, password: str, now_ms: int) -> str | None:
        key = self._key(user, password)
        found = self._known.get(key)
        if found is None:
            return None
        role, expires_ms = found
        if expires_ms <= now_ms:
            del self._known[key]
            return None
        return role

    def put(self, user: str, password: str, role: str, now_ms: int) -> None:
        key = self._key(user, password)
        self._known.pop(key, None)
        self._known[key] = (role, now_ms + self._ttl_ms)
        while len(self._known) > self._entries:
            self._known.popitem(last=False)
