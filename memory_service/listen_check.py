"""Whether the listen address is free, asked before gRPC binds it.

gRPC reports a busy port as a RuntimeError that says nothing about why, after
its core has printed a multi-line error of its own to stderr. Binding a plain
socket first (with SO_REUSEADDR, as gRPC does, so connections in TIME_WAIT
do not count) turns the common mistakes into one clear line. It is a check,
not a reservation: the socket is closed before gRPC binds.
"""

from __future__ import annotations

import errno
import socket

__all__ = ["check_port_free"]


def check_port_free(host: str, port: int) -> None:
    """Raise OSError naming the address if `host:port` cannot be bound (port 0: no check)."""
    if port == 0:
        return
    # gRPC takes "[::1]" and "" (all interfaces); getaddrinfo takes "::1" and None.
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {where}: unknown host ({exc.strerror})") from exc
    for family, kind, protocol, _, sockaddr in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = "the port is in use by another process"
                elif exc.errno == errno.EADDRNOTAVAIL:
                    why = f"{host} is not an address of this machine"
                elif exc.errno == errno.EACCES:
                    why = "permission denied (ports below 1024 need privileges)"
                else:
                    why = exc.strerror or str(exc)
                raise OSError(f"cannot listen on {where}: {why}") from exc
