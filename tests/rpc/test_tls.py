"""TLS, mutual TLS and the refusal to listen unprotected, on real servers and channels.

A throwaway CA, server certificate (SAN 127.0.0.1 and localhost) and client
certificates are made with `cryptography` in tmp_path for each test.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memory_service import tls
from memory_service.server import RunningServer, start
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Nothing listens on port 1: a server that opened its pool first would fail
# with a connection error instead of the refusal under test.
UNREACHABLE_DATABASE = "postgresql://nobody@127.0.0.1:1/nothing"


# --- A throwaway PKI -------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def issue(
        self, common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        """A leaf certificate and its key, as PEM."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)


def _make_ca(common_name: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Issuer(key, cert)


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_pem: bytes
    client_key_pem: bytes
    # Signed by another CA: must be turned away by a mutual-TLS server.
    rogue_cert_pem: bytes
    rogue_key_pem: bytes


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = _make_ca("faraday test CA")
    server_cert, server_key = ca.issue(
        "memory-service",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_cert, client_key = ca.issue("lesson-planner", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    rogue_cert, rogue_key = _make_ca("rogue CA").issue(
        "intruder", ExtendedKeyUsageOID.CLIENT_AUTH, []
    )
    files = {"ca.pem": _pem_cert(ca.cert), "server.pem": server_cert, "server.key": server_key}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return Pki(
        ca_pem=_pem_cert(ca.cert),
        ca_file=tmp_path / "ca.pem",
        server_cert_file=tmp_path / "server.pem",
        server_key_file=tmp_path / "server.key",
        client_cert_pem=client_cert,
        client_key_pem=client_key,
        rogue_cert_pem=rogue_cert,
        rogue_key_pem=rogue_key,
    )


# --- Helpers ---------------------------------------------------------------


@asynccontextmanager
async def _serving(database_url: str, **overrides: Any) -> AsyncIterator[RunningServer]:
    running = await start(TEST_SETTINGS.with_overrides(**overrides), database_url)
    try:
        yield running
    finally:
        await running.stop(0.5)


async def _health(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    return int(response.status)


async def _assert_calls_get_through(channel: grpc.aio.Channel) -> None:
    assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
    # NOT_FOUND comes from the servicer: the call crossed TLS and reached the handler.
    stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=1), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def _assert_turned_away(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# --- (a) TLS ---------------------------------------------------------------


async def test_tls_server_answers_tls_clients_and_refuses_plain_text(
    database_url: str, pki: Pki
) -> None:
    async with _serving(
        database_url, tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file
    ) as running:
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
        for host in ("127.0.0.1", "localhost"):  # both SANs verify
            async with grpc.aio.secure_channel(f"{host}:{running.port}", credentials) as ch:
                await _assert_calls_get_through(ch)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            await _assert_turned_away(ch)


async def test_tls_client_rejects_a_server_it_cannot_verify(database_url: str, pki: Pki) -> None:
    # The client trusts another CA: the server's certificate must not pass.
    other_ca = _pem_cert(_make_ca("some other CA").cert)
    async with _serving(
        database_url, tls_cert_file=pki.server_cert_file, tls_key_file=pki.server_key_file
    ) as running:
        credentials = grpc.ssl_channel_credentials(root_certificates=other_ca)
        async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", credentials) as ch:
            await _assert_turned_away(ch)


# --- (b) Mutual TLS --------------------------------------------------------


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(
    database_url: str, pki: Pki
) -> None:
    async with _serving(
        database_url,
        tls_cert_file=pki.server_cert_file,
        tls_key_file=pki.server_key_file,
        tls_client_ca_file=pki.ca_file,
    ) as running:
        target = f"127.0.0.1:{running.port}"
        with_cert = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_pem,
            private_key=pki.client_key_pem,
            certificate_chain=pki.client_cert_pem,
        )
        async with grpc.aio.secure_channel(target, with_cert) as ch:
            await _assert_calls_get_through(ch)

        without_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca_pem)
        async with grpc.aio.secure_channel(target, without_cert) as ch:
            await _assert_turned_away(ch)

        rogue = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_pem,
            private_key=pki.rogue_key_pem,
            certificate_chain=pki.rogue_cert_pem,
        )
        async with grpc.aio.secure_channel(target, rogue) as ch:
            await _assert_turned_away(ch)


# --- (c) Configuration errors ---------------------------------------------


async def test_no_tls_configured_means_plain_text() -> None:
    assert tls.server_credentials(TEST_SETTINGS) is None


async def test_half_a_tls_configuration_is_an_error(pki: Pki) -> None:
    cases = [
        ({"tls_cert_file": pki.server_cert_file}, "FARADAY_TLS_KEY_FILE"),
        ({"tls_key_file": pki.server_key_file}, "FARADAY_TLS_CERT_FILE"),
        ({"tls_client_ca_file": pki.ca_file}, "FARADAY_TLS_CLIENT_CA_FILE"),
    ]
    for overrides, named in cases:
        with pytest.raises(ValueError, match=named):
            tls.server_credentials(TEST_SETTINGS.with_overrides(**overrides))


async def test_unreadable_or_wrong_pem_files_are_named(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    other_key = tmp_path / "other.key"
    other_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    cert, key = pki.server_cert_file, pki.server_key_file
    cases = [
        ({"tls_cert_file": missing, "tls_key_file": key}, "FARADAY_TLS_CERT_FILE", missing),
        ({"tls_cert_file": cert, "tls_key_file": missing}, "FARADAY_TLS_KEY_FILE", missing),
        ({"tls_cert_file": not_pem, "tls_key_file": key}, "FARADAY_TLS_CERT_FILE", not_pem),
        ({"tls_cert_file": cert, "tls_key_file": not_pem}, "FARADAY_TLS_KEY_FILE", not_pem),
        # Swapped files: the key where the certificate belongs.
        ({"tls_cert_file": key, "tls_key_file": cert}, "FARADAY_TLS_CERT_FILE", key),
        ({"tls_cert_file": cert, "tls_key_file": other_key}, "does not belong", other_key),
        (
            {"tls_cert_file": cert, "tls_key_file": key, "tls_client_ca_file": not_pem},
            "FARADAY_TLS_CLIENT_CA_FILE",
            not_pem,
        ),
    ]
    for overrides, named, path in cases:
        with pytest.raises(ValueError, match=named) as caught:
            tls.server_credentials(TEST_SETTINGS.with_overrides(**overrides))
        assert str(path) in str(caught.value)


# --- (d) Refusing to listen beyond loopback without auth -------------------


async def test_start_refuses_all_interfaces_without_auth_before_opening_the_pool() -> None:
    settings = TEST_SETTINGS.with_overrides(host="0.0.0.0")
    with pytest.raises(tls.RefusedToListen) as caught:
        await start(settings, UNREACHABLE_DATABASE)
    message = str(caught.value)
    for fix in ("FARADAY_SERVICE_TOKENS_FILE", "127.0.0.1", "--allow-insecure"):
        assert fix in message
    assert "FARADAY_ALLOW_INSECURE=true" in message


async def test_allow_insecure_listens_on_all_interfaces_and_warns_loudly(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="memory_service.tls")
    async with (
        _serving(database_url, host="0.0.0.0", allow_insecure=True) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch,
    ):
        assert await _health(ch) == health_pb2.HealthCheckResponse.SERVING
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "memory_service.tls" and r.levelno == logging.WARNING
    ]
    text = "\n".join(warnings)
    assert "WITHOUT AUTHENTICATION" in text
    assert "read and change every teacher's data" in text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"])
async def test_loopback_needs_no_auth(host: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="memory_service.tls")
    tls.check_listen_address(TEST_SETTINGS.with_overrides(host=host), auth_enabled=False)
    assert not [r for r in caplog.records if r.name == "memory_service.tls"]


async def test_start_on_loopback_without_auth_is_fine(database_url: str) -> None:
    async with (
        _serving(database_url, host="127.0.0.1") as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch,
    ):
        assert await _health(ch) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "10.0.0.5", "my-host.internal", "localhost.", "LOCALHOST"]
)
async def test_anything_else_counts_as_beyond_loopback(host: str) -> None:
    settings = TEST_SETTINGS.with_overrides(host=host)
    with pytest.raises(tls.RefusedToListen):
        tls.check_listen_address(settings, auth_enabled=False)
    tls.check_listen_address(settings, auth_enabled=True)  # auth on: any address is fine


async def test_auth_enabled_may_listen_anywhere_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="memory_service.tls")
    tls.check_listen_address(TEST_SETTINGS.with_overrides(host="0.0.0.0"), auth_enabled=True)
    assert not [r for r in caplog.records if r.name == "memory_service.tls"]
