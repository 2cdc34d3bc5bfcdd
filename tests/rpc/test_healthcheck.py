"""`memory-service healthcheck`, run as the Docker HEALTHCHECK runs it: a process
reading FARADAY_* from its environment, against real servers."""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from memory_service.server import RunningServer, start
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _healthcheck(env: dict[str, str], *args: str) -> tuple[int, str]:
    # A subprocess, not a call: the check is a blocking client, and the
    # server under test runs on this very event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "memory_service.cli",
        "healthcheck",
        *args,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FARADAY_")}, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for `memory.internal` only, as a deployment's would be:
    the probe connects to 127.0.0.1 and must verify the name instead."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memory.internal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("memory.internal")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.pem", tmp_path / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_a_serving_server_on_its_configured_port_is_healthy(
    server: RunningServer,
) -> None:
    env = {"FARADAY_HOST": "0.0.0.0", "FARADAY_PORT": str(server.port)}
    code, output = await _healthcheck(env)
    assert (code, output.strip()) == (0, f"127.0.0.1:{server.port}: SERVING")
    # A name the server reports NOT_SERVING for (no embedding model in the tests).
    code, output = await _healthcheck(env, "--service", "faraday.memory.v1.SemanticRecall")
    assert code == 1 and "NOT_SERVING" in output


async def test_nothing_listening_is_unhealthy() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed
    code, output = await _healthcheck({"FARADAY_PORT": str(port)}, "--timeout-seconds", "1")
    assert code == 1 and "UNAVAILABLE" in output


async def test_a_tls_server_is_checked_over_tls(app_url: str, tmp_path: Path) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    running = await start(
        TEST_SETTINGS.with_overrides(tls_cert_file=cert_file, tls_key_file=key_file), app_url
    )
    try:
        env = {
            "FARADAY_PORT": str(running.port),
            "FARADAY_TLS_CERT_FILE": str(cert_file),
            "FARADAY_TLS_KEY_FILE": str(key_file),
        }
        code, output = await _healthcheck(env)
        assert (code, output.strip()) == (0, f"127.0.0.1:{running.port}: SERVING")
        # The old probe: plaintext to a TLS port fails.
        code, _ = await _healthcheck({"FARADAY_PORT": str(running.port)}, "--timeout-seconds", "1")
        assert code == 1
    finally:
        await running.stop(0.5)
