"""``sign-encrypt``, the default: a generated, re-used server certificate; a trust list of
client certificates (``wattkeeper opcua trust``); users and passwords; no anonymous session and
no session at all over an unsecured channel."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from protocols.opcua.security import CERTIFICATE_FILE, opcua_dir, trusted_dir
from server.cli import main as cli_main
from tests.opcua.opcua_parks import SECURE_KEYS, asyncio_thread, meter_node, opcua_park, open_opcua
from tests.ws.parks import hub_park_toml

CLIENT_URI = "urn:wattkeeper:tests:scada"
POLICIES = ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")


async def client_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.der", folder / f"{name}.pem"
    await setup_self_signed_certificate(key, cert, CLIENT_URI, socket.gethostname(),
                                        [ExtendedKeyUsageOID.CLIENT_AUTH],
                                        {"commonName": name})
    return cert, key


async def attempt(url: str, cert: Path | None, key: Path | None, user: str | None,
                  password: str = "", policy: str = "Basic256Sha256") -> str:
    """(On the asyncio loop.) "ok: <balance>" or the name of the error that refused us."""
    client = Client(url, timeout=10)
    client.application_uri = CLIENT_URI
    if cert is not None and key is not None:
        await client.set_security_string(f"{policy},SignAndEncrypt,{cert},{key}")
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    try:
        await client.connect()
    except Exception as error:
        return type(error).__name__
    try:
        return f"ok: {await (await meter_node(client, 'M-0', 'Balance')).read_value()}"
    finally:
        await client.disconnect()


async def unsecured_session(url: str) -> str:
    """(On the asyncio loop.) A client that skips security altogether: it may ask for the
    endpoints, but not open a session."""
    client = Client(url, timeout=10)
    client.set_user("op")
    client.set_password("op-secret")
    try:
        await client.connect_socket()
        await client.send_hello()
        await client.open_secure_channel()
        endpoints = await client.get_endpoints()
        assert endpoints and all(e.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt
                                 for e in endpoints)
        try:
            await client.create_session()
        except Exception as error:
            return type(error).__name__
        return "session accepted"
    finally:
        client.disconnect_socket()


async def test_sign_encrypt_trusts_only_listed_clients_with_a_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "park"
    config = opcua_park(data, SECURE_KEYS)
    trusted_cert, trusted_key = await client_certificate(tmp_path / "pki", "scada")
    stranger_cert, stranger_key = await client_certificate(tmp_path / "pki", "stranger")
    config_file = tmp_path / "park.toml"  # the same park, as the CLI reads it
    config_file.write_text(hub_park_toml(data, opcua=SECURE_KEYS))
    assert cli_main(["opcua", "trust", str(trusted_cert), "--config", str(config_file)]) == 0
    assert "trusted:" in capsys.readouterr().out
    async with open_opcua(config) as (_park, services):
        url = services.opcua_url
        with asyncio_thread() as loop:
            results = {policy: await loop.run(attempt(url, trusted_cert, trusted_key, "op",
                                                      "op-secret", policy))
                       for policy in POLICIES}
            wrong = await loop.run(attempt(url, trusted_cert, trusted_key, "op", "guess"))
            anonymous = await loop.run(attempt(url, trusted_cert, trusted_key, None))
            untrusted = await loop.run(attempt(url, stranger_cert, stranger_key, "op",
                                               "op-secret"))
            bare = await loop.run(unsecured_session(url))
    assert results == dict.fromkeys(POLICIES, "ok: 100.0")
    assert wrong == "BadUserAccessDenied"
    assert anonymous == "BadIdentityTokenRejected"
    assert untrusted == "BadCertificateUntrusted"
    assert bare == "BadSecurityModeRejected"


async def test_the_server_certificate_is_generated_once_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "park"
    config = opcua_park(data, SECURE_KEYS)
    async with open_opcua(config):
        first = (opcua_dir(data) / CERTIFICATE_FILE).read_bytes()
    async with open_opcua(config):
        again = (opcua_dir(data) / CERTIFICATE_FILE).read_bytes()
    assert first == again
    certificate = x509.load_der_x509_certificate(first)
    uris = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["urn:wattkeeper:server"]
    assert certificate.public_bytes(Encoding.DER) == first


def test_trust_refuses_a_file_that_is_not_a_certificate(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "park.toml"
    config_file.write_text(hub_park_toml(tmp_path / "park", opcua=SECURE_KEYS))
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"not a certificate")
    assert cli_main(["opcua", "trust", str(junk), "--config", str(config_file)]) == 1
    assert "is not an X.509 certificate" in capsys.readouterr().err
    assert not trusted_dir(tmp_path / "park").exists() or not any(
        trusted_dir(tmp_path / "park").iterdir())
