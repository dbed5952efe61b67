"""TLS for the servers we run: a server-side context from a certificate and key file."""

from __future__ import annotations

import ssl
from pathlib import Path

from server.errors import UserError


def server_tls_context(cert: Path | str, key: Path | str, *, where: str) -> ssl.SSLContext:
    """A context for serving ``wss://`` (or ``https://``); ``where`` names the config keys
    in the error when the files cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise UserError(f"cannot load the TLS certificate {where} (certificate {cert}, "
                        f"key {key}): {error}") from None
    return context
