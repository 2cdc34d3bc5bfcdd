"""The connection pool, and the one place that turns driver failures into domain errors."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from memory_service.domain.errors import Unavailable

logger = logging.getLogger(__name__)

# SQLSTATE classes that mean "the server is not there right now": connection
# exceptions (08), insufficient resources (53), operator intervention such as
# a shutdown (57).
_UNAVAILABLE_CLASSES = ("08", "53", "57")


@dataclass(frozen=True)
class PoolSettings:
    url: str
    size: int = 20
    max_overflow: int = 10
    timeout_seconds: float = 30.0
    recycle_seconds: float = 1800.0
    pre_ping: bool = True
    connect_timeout_seconds: float = 10.0
    statement_timeout_seconds: float = 30.0


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] in _UNAVAILABLE_CLASSES
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.ConnectionDoesNotExistError,
    )


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects.
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


async def _ping(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT 1")


class Database:
    """An asyncpg pool with domain-level errors.

    `connection()` and `transaction()` raise domain Unavailable for any sign
    that PostgreSQL is unreachable (refused, reset, shut down, pool timeout),
    so callers get UNAVAILABLE instead of INTERNAL. CancelledError always
    passes through untouched: asyncpg cancels the running query on it.
    """

    def __init__(self, settings: PoolSettings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        s = self._settings
        self._pool = await asyncpg.create_pool(
            s.url,
            min_size=s.size,
            max_size=s.size + s.max_overflow,
            # asyncpg closes connections idle this long; it has no max-age
            # recycling, so this is the nearest equivalent of pool_recycle.
            max_inactive_connection_lifetime=s.recycle_seconds,
            timeout=s.connect_timeout_seconds,
            command_timeout=s.statement_timeout_seconds,
            init=_init_connection,
            setup=_ping if s.pre_ping else None,
            server_settings={
                "application_name": "faraday-memory",
                "statement_timeout": str(int(s.statement_timeout_seconds * 1000)),
            },
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise Unavailable("database pool is not open")
        try:
            async with self._pool.acquire(timeout=self._settings.timeout_seconds) as conn:
                yield conn
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
                raise Unavailable("the database is unavailable; retry later") from exc
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def ping(self) -> bool:
        try:
            async with self.connection() as conn:
                await conn.execute("SELECT 1")
            return True
        except Unavailable:
            return False
