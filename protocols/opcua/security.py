"""OPC UA security: the server's certificate, the client trust list, users and policies.

* **Certificate**: ``[opcua] certificate`` / ``private_key`` when configured; otherwise a
  self-signed certificate and an RSA key are generated into ``<data_dir>/opcua/`` on first
  start and re-used (regenerated only when missing, expired, or made for another host or
  application URI), so clients trust the server once.
* **Trust list**: ``<data_dir>/opcua/trusted/`` holds the client certificates the server
  accepts (``wattkeeper opcua trust CERT`` copies one there, as DER). With ``sign-encrypt``
  a client whose certificate is not in it is refused at the secure channel. The folder is
  read again when it changes, so a certificate added while the server runs is trusted from
  the next connection on.
* **Users**: the park's ``[[users]]`` (the same as the hub's and the console's), with their
  roles; anonymous sessions are refused. A password check (scrypt) takes ~50 ms; it runs in
  the OPC UA process, not in the control loop's.
* **Policies**: ``sign-encrypt`` offers Basic256Sha256, Aes128Sha256RsaOaep and
  Aes256Sha256RsaPss, all SignAndEncrypt, and nothing unencrypted; ``none`` offers only the
  unencrypted endpoint (passwords then cross in clear: tests and demos on loopback only; the
  server says so loudly at start).
* **No session over an unsecured channel**: asyncua opens every connection with the None
  policy (a client needs it to ask for the endpoints) and then accepts *any* request on it,
  even when no None endpoint is offered: a hand-made client could log in with a clear-text
  password and read. :func:`refuse_unsecured_sessions` answers every request but
  GetEndpoints and FindServers on such a channel ``BadSecurityModeRejected``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from asyncua import ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from protocols.opcua.callers import ParkUser

log = logging.getLogger(__name__)

APPLICATION_URI: Final = "urn:wattkeeper:server"
OPCUA_DIR: Final = "opcua"
TRUSTED_DIR: Final = "trusted"
CERTIFICATE_FILE: Final = "server-cert.der"
KEY_FILE: Final = "server-key.pem"

SIGN_ENCRYPT_POLICIES: Final = (
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
)


def opcua_dir(data_dir: Path) -> Path:
    return data_dir / OPCUA_DIR


def trusted_dir(data_dir: Path) -> Path:
    return opcua_dir(data_dir) / TRUSTED_DIR


async def ensure_server_certificate(data_dir: Path, host: str) -> tuple[Path, Path]:
    """``(certificate, key)`` in the data directory, generated when missing or unusable."""
    folder = opcua_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    certificate, key = folder / CERTIFICATE_FILE, folder / KEY_FILE
    fresh = not key.is_file() or not certificate.is_file()
    await setup_self_signed_certificate(
        key, certificate, APPLICATION_URI, host or socket.gethostname(),
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "CN", "organizationName": "wattkeeper", "commonName": "wattkeeper"})
    os.chmod(key, 0o600)
    if fresh:
        log.info("OPC UA: generated the server certificate %s (clients trust it once)",
                 certificate)
    return certificate, key


def certificate_der(data: bytes) -> bytes:
    """A certificate in DER, from DER or PEM bytes (``ValueError`` when it is neither)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)


def trust_certificate(data_dir: Path, source: Path) -> Path:
    """Copy a client certificate into the trust list (``wattkeeper opcua trust``); returns
    where it went. ``ValueError`` when the file is not a certificate."""
    der = certificate_der(source.read_bytes())
    cert = x509.load_der_x509_certificate(der)
    folder = trusted_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.stem) or "client"
    target = folder / f"{name}-{cert.fingerprint(hashes.SHA256()).hex()[:12]}.der"
    target.write_bytes(der)
    return target


_DISCOVERY: Final = frozenset({
    ua.NodeId(ua.ObjectIds.GetEndpointsRequest_Encoding_DefaultBinary),
    ua.NodeId(ua.ObjectIds.FindServersRequest_Encoding_DefaultBinary),
})


def refuse_unsecured_sessions(iserver: Any) -> None:
    """See the module docstring. asyncua's message dispatcher is wrapped once per process;
    the rule holds for the servers marked here (the OPC UA process has one)."""
    from asyncua.common.utils import ServiceError
    from asyncua.server import uaprocessor

    iserver.wattkeeper_secure_only = True
    processor = uaprocessor.UaProcessor
    if getattr(processor, "_wattkeeper_guarded", False):
        return
    original = processor._process_message

    async def process_message(self: Any, typeid: Any, requesthdr: Any, seqhdr: Any,
                              body: Any) -> Any:
        if getattr(self.iserver, "wattkeeper_secure_only", False) \
                and self._connection.security_policy.Mode == ua.MessageSecurityMode.None_ \
                and typeid not in _DISCOVERY:
            raise ServiceError(ua.StatusCodes.BadSecurityModeRejected)
        return await original(self, typeid, requesthdr, seqhdr, body)

    processor._process_message = process_message
    processor._wattkeeper_guarded = True


class TrustList:
    """asyncua's certificate validator over the trust folder, read again when it changes."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._seen: tuple[tuple[str, float], ...] | None = None
        self._validator: CertificateValidator | None = None

    def _listing(self) -> tuple[tuple[str, float], ...]:
        if not self._folder.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime) for p in self._folder.iterdir()
                            if p.is_file()))

    async def __call__(self, certificate: x509.Certificate,
                       description: ua.ApplicationDescription) -> None:
        listing = self._listing()
        if self._validator is None or listing != self._seen:
            self._folder.mkdir(parents=True, exist_ok=True)
            store = TrustStore([self._folder], [])
            await store.load()
            self._validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT, store)
            self._seen = listing
        try:
            await self._validator(certificate, description)
        except Exception:
            log.warning("OPC UA: refused a client certificate (%s, %s): not in the trust list "
                        "%s or not valid; `wattkeeper opcua trust` adds it",
                        certificate.subject.rfc4514_string(), description.ApplicationUri,
                        self._folder)
            raise


class ParkUsers:
    """asyncua's user manager over the park's users (``check(name, password)`` gives the role
    or None); a refusal is logged with the user name, never the password."""

    def __init__(self, check: Callable[[str, str], str | None]) -> None:
        self._check = check

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if not username or password is None:
            return None  # anonymous, or a certificate token: refused
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        role = self._check(username, password)
        if role is None:
            log.warning("OPC UA: a login as %r was refused (unknown user or wrong password)",
                        username)
            return None
        return ParkUser(role=UserRole.User, name=username, park_role=role)
