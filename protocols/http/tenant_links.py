"""The tenants' page links: a signed token per tenant, checked on every request to ``/t/...``.

Theory of operation
-------------------
A link is ``/t/<token>``. The token carries what the server needs to decide, with nothing
stored per link: the tenant id, the tenant's *link generation* at the time the link was made,
and the expiry (unix seconds), signed with HMAC-SHA256 under the park's link secret::

    token   = b64url(payload) "." b64url(mac[:16])
    payload = "1" LF tenant LF generation LF expires_s        (UTF-8)
    mac     = HMAC-SHA256(secret, "wattkeeper-tenant-link" LF payload)

The MAC is cut to 128 bits (RFC 2104 allows any length of at least half the hash) so a link
fits an SMS. Revoking a tenant's links raises its generation (a journaled entry,
``server.tenant_links``): every link made before carries a lower number and is refused from
then on, and links made after carry the new one. A link is checked in this order, and the
first failure is its answer: the signature (``bad_signature``: malformed, altered, or signed
with another secret), the generation (``revoked``: not the tenant's current one, or the tenant
is no longer in the park), the expiry (``expired``).

This module is pure (no clock, no I/O): the time and the current generations come in as
arguments.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import Final, Literal

import attrs

VERSION: Final = "1"
CONTEXT: Final = b"wattkeeper-tenant-link\n"
MAC_BYTES: Final = 16
MAX_TOKEN_CHARS: Final = 512

RefusalCode = Literal["revoked", "expired", "bad_signature"]


class LinkRefused(Exception):
    """The link is not (or no longer) good; ``code`` says why, in the API's words."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code: RefusalCode = code


@attrs.frozen
class LinkClaim:
    """What a correctly signed token says."""

    tenant: str
    generation: int
    expires_s: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, CONTEXT + payload, hashlib.sha256).digest()[:MAC_BYTES]


def sign_link(secret: bytes, tenant: str, generation: int, expires_s: int) -> str:
    """The token of a link to ``tenant``'s page (``/t/<token>``)."""
    if not secret:
        raise ValueError("a link needs a secret to be signed with")
    payload = "\n".join((VERSION, tenant, str(generation), str(expires_s))).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_link(secret: bytes, token: str) -> LinkClaim:
    """The claim of a token whose signature is right (``LinkRefused`` bad_signature else)."""
    bad = LinkRefused("bad_signature", "this link is not one of this park's: check that it "
                                       "was copied whole, or ask the park office for a new one")
    if not secret or not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise bad
    encoded, dot, mac_text = token.partition(".")
    if not dot:
        raise bad
    try:
        payload, mac = _unb64(encoded), _unb64(mac_text)
    except (binascii.Error, ValueError):
        raise bad from None
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise bad
    try:
        version, tenant, generation, expires = payload.decode().split("\n")
        claim = LinkClaim(tenant, int(generation), int(expires))
    except ValueError:
        raise bad from None  # (signed by us, so only a future format could get here)
    if version != VERSION:
        raise bad
    return claim


def check_link(secret: bytes, token: str, now_s: float,
               generation_of: Callable[[str], int | None]) -> str:
    """The tenant a link is good for, now; ``LinkRefused`` otherwise (see the module
    docstring for the order). ``generation_of(tenant)`` is the tenant's current link
    generation, None when the park has no such tenant."""
    claim = read_link(secret, token)
    current = generation_of(claim.tenant)
    if current is None or claim.generation != current:
        raise LinkRefused("revoked", "this link was withdrawn by the park office; ask them "
                                     "for a new one")
    if now_s >= claim.expires_s:
        raise LinkRefused("expired", "this link has expired; ask the park office for a new one")
    return claim.tenant
