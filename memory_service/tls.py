"""Transport security: server TLS credentials, and the refusal to listen unprotected.

Why this module exists:

* The service holds every teacher's memories. Without authentication, anyone
  who can open a TCP connection to the port can read and change all of it, so
  an unauthenticated server may only listen on loopback, where the only
  callers are processes on the same machine. Binding beyond loopback without
  auth needs an explicit `allow_insecure`, and is then logged loudly at every
  start, so the choice shows up in the logs rather than by accident (a
  `--host 0.0.0.0` copied from a container tutorial). Host names other than
  exactly "localhost" count as non-loopback: checking what a name resolves to
  at start-up proves nothing about what it resolves to later.

* Tokens and memories must not cross a network in plain text, so the server
  speaks TLS when given a certificate and key (and mutual TLS, requiring a
  client certificate signed by the given CA, when given a client CA).
  Half a configuration (a certificate without its key, a client CA without a
  server certificate) is an error at start-up, never a silent fall-back to
  plain text. The PEM files are parsed here, and the key checked against the
  certificate, so that a swapped, encrypted or mismatched file fails at
  start-up with the file's name instead of as an opaque handshake failure on
  every call.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from memory_service.config import Settings

__all__ = ["RefusedToListen", "check_listen_address", "is_loopback_host", "server_credentials"]

logger = logging.getLogger(__name__)

_CERT_VAR = "FARADAY_TLS_CERT_FILE"
_KEY_VAR = "FARADAY_TLS_KEY_FILE"
_CLIENT_CA_VAR = "FARADAY_TLS_CLIENT_CA_FILE"


class RefusedToListen(ValueError):
    """The server would accept unauthenticated calls from beyond this machine."""


def is_loopback_host(host: str) -> bool:
    """True only for a literal loopback IP (127.0.0.0/8, ::1) or exactly "localhost".

    Deliberately conservative: any other name, and the wildcards "0.0.0.0",
    "::" and "" (all interfaces), are not loopback.
    """
    if host == "localhost":
        return True
    # gRPC accepts IPv6 literals in brackets ("[::1]"); the check should too.
    literal = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(literal).is_loopback
    except ValueError:
        return False


def check_listen_address(settings: Settings, *, auth_enabled: bool) -> None:
    """Refuse (or, with allow_insecure, loudly allow) an unauthenticated non-loopback bind.

    Raises RefusedToListen, before anything is opened or bound, when auth is
    off, the host is not loopback and allow_insecure is not set.
    """
    if auth_enabled or is_loopback_host(settings.host):
        return
    where = f"{settings.host or '(all interfaces)'}:{settings.port}"
    if not settings.allow_insecure:
        raise RefusedToListen(
            f"refusing to listen on {where} without authentication: anyone who can reach"
            " the port could read and change every teacher's data. Either configure"
            " authentication (FARADAY_SERVICE_TOKENS_FILE, FARADAY_JWT_HS256_SECRET or"
            " FARADAY_JWT_PUBLIC_KEY_FILE), or listen on loopback only (--host 127.0.0.1),"
            " or, if something else in front of the port protects it, pass --allow-insecure"
            " (FARADAY_ALLOW_INSECURE=true)."
        )
    transport = (
        "over TLS"
        if settings.tls_cert_file is not None
        else "in plain text (no TLS: calls can also be read and altered on the network)"
    )
    for line in (
        "*" * 72,
        f"INSECURE: listening on {where} WITHOUT AUTHENTICATION, {transport}.",
        "Anyone who can reach this port can read and change every teacher's data.",
        "This was allowed by --allow-insecure / FARADAY_ALLOW_INSECURE=true. Configure",
        "FARADAY_SERVICE_TOKENS_FILE or FARADAY_JWT_* to turn authentication on, or",
        "listen on 127.0.0.1 only.",
        "*" * 72,
    ):
        logger.warning("%s", line)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials for the listening port, or None for plain text.

    None when neither certificate nor key is configured. With a client CA,
    mutual TLS: callers must present a certificate signed by that CA.
    Raises ValueError (naming the FARADAY_* variable and the file) for half a
    configuration or a file that cannot be read or parsed.
    """
    cert_file, key_file, ca_file = (
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
    )
    if cert_file is None and key_file is None:
        if ca_file is not None:
            raise ValueError(
                f"{_CLIENT_CA_VAR} is set but {_CERT_VAR} and {_KEY_VAR} are not:"
                " mutual TLS needs the server's own certificate and key too"
            )
        return None
    if cert_file is None or key_file is None:
        given, missing = (_CERT_VAR, _KEY_VAR) if key_file is None else (_KEY_VAR, _CERT_VAR)
        raise ValueError(
            f"{given} is set but {missing} is not: TLS needs both the certificate chain"
            " and its private key (PEM files)"
        )

    cert_pem = _read(cert_file, _CERT_VAR)
    key_pem = _read(key_file, _KEY_VAR)
    certificates = _parse_certificates(cert_pem, cert_file, _CERT_VAR)
    _check_key_matches(key_pem, key_file, certificates[0], cert_file)
    client_ca_pem: bytes | None = None
    if ca_file is not None:
        client_ca_pem = _read(ca_file, _CLIENT_CA_VAR)
        _parse_certificates(client_ca_pem, ca_file, _CLIENT_CA_VAR)
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=client_ca_pem,
        require_client_auth=client_ca_pem is not None,
    )


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{variable}: cannot read {path}: {exc.strerror or exc}") from exc


def _parse_certificates(pem: bytes, path: Path, variable: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ValueError(
            f"{variable}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----): {exc}"
        ) from exc
    return certificates


def _check_key_matches(
    key_pem: bytes, key_path: Path, certificate: x509.Certificate, cert_path: Path
) -> None:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # cryptography's way of saying "encrypted, and no password"
        raise ValueError(
            f"{_KEY_VAR}: {key_path} is encrypted; the server needs an unencrypted PEM key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"{_KEY_VAR}: {key_path} holds no usable PEM private key"
            f" (-----BEGIN PRIVATE KEY-----): {exc}"
        ) from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ValueError(
            f"{_KEY_VAR}: the key in {key_path} does not belong to the first certificate"
            f" in {cert_path} ({_CERT_VAR})"
        )
