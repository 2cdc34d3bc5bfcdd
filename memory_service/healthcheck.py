"""`memory-service healthcheck`: ask the local server's grpc.health.v1 service; exit 0 or 1.

Made for container health checks (the Dockerfile's HEALTHCHECK, compose.yaml):
it reads the server's own FARADAY_* settings, so it follows the configured
port, and speaks TLS when the server does (FARADAY_TLS_CERT_FILE), where a
hard-wired plaintext probe of port 50051 would report a healthy TLS server,
or one on another port, as dead.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any

from memory_service.config import Settings, load

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1  # not SERVING, unreachable, or the check itself failed

# Listening on every interface: the probe, on the same machine, uses loopback.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "healthcheck",
        help="exit 0 if the server on this machine answers SERVING (for container health checks)",
        description=(
            "Call grpc.health.v1.Health/Check on the server this machine runs, found"
            " through the same FARADAY_* settings: FARADAY_HOST (wildcards become"
            " loopback) and FARADAY_PORT; TLS when FARADAY_TLS_CERT_FILE is set."
            f" Exit {EXIT_SERVING} if SERVING, {EXIT_NOT_SERVING} otherwise."
        ),
    )
    parser.add_argument(
        "--service", default="", help="health service name (default: the whole server)"
    )
    parser.add_argument(
        "--timeout-seconds", type=float, default=2.0, help="deadline of the check (default 2)"
    )
    parser.add_argument(
        "--tls-ca-file",
        type=Path,
        help="PEM CA to verify the server with (default: FARADAY_TLS_CERT_FILE itself,"
        " which verifies a self-signed certificate)",
    )
    parser.add_argument(
        "--tls-server-name",
        help="name to verify the certificate against (default: the connect address if the"
        " certificate names it, else its first DNS name)",
    )
    parser.add_argument(
        "--tls-client-cert-file",
        type=Path,
        help="PEM client certificate, for a server requiring one (FARADAY_TLS_CLIENT_CA_FILE)",
    )
    parser.add_argument(
        "--tls-client-key-file",
        type=Path,
        help="PEM private key of --tls-client-cert-file (both or neither)",
    )


def _host(settings: Settings) -> str:
    if settings.host in _WILDCARDS:
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(settings.host.strip("[]")).version == 6:
            return f"[{settings.host.strip('[]')}]"
    except ValueError:
        pass  # a host name
    return settings.host


def _server_name(cert_pem: bytes, host: str) -> str | None:
    """The name to verify `cert_pem` against when connecting to `host`: None
    (the host itself) if the certificate names it, else its first DNS name."""
    from cryptography import x509

    try:
        sans = (
            x509.load_pem_x509_certificate(cert_pem)
            .extensions.get_extension_for_class(x509.SubjectAlternativeName)
            .value
        )
    except (ValueError, x509.ExtensionNotFound):
        return None
    bare = host.strip("[]")
    names = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    dns = sans.get_values_for_type(x509.DNSName)
    if bare in names or bare in dns or not dns:
        return None
    return dns[0]


def run(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        settings = load()
        host = _host(settings)
        target = f"{host}:{settings.port}"
        if settings.tls_cert_file is None:
            channel = grpc.insecure_channel(target)
        else:
            cert_pem = settings.tls_cert_file.read_bytes()
            roots = args.tls_ca_file.read_bytes() if args.tls_ca_file else cert_pem
            client_cert = client_key = None
            if args.tls_client_cert_file and args.tls_client_key_file:
                client_cert = args.tls_client_cert_file.read_bytes()
                client_key = args.tls_client_key_file.read_bytes()
            credentials = grpc.ssl_channel_credentials(roots, client_key, client_cert)
            name = args.tls_server_name or _server_name(cert_pem, host)
            options = [] if name is None else [("grpc.ssl_target_name_override", name)]
            channel = grpc.secure_channel(target, credentials, options=options)
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return EXIT_NOT_SERVING
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=args.timeout_seconds,
            )
        except grpc.RpcError as error:
            print(f"healthcheck: {target}: {error.code().name}", file=sys.stderr)
            return EXIT_NOT_SERVING
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return EXIT_SERVING if response.status == health_pb2.HealthCheckResponse.SERVING else 1
