"""Whether PostgreSQL answers: `SELECT 1` on a connection of the probe's own.

Not through the pools: under load every pooled connection can be busy, and a
probe that waited for one would call a saturated but healthy database down,
taking the instance out of its load balancer exactly when it is needed. The
one extra connection costs nothing while idle.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from memory_service.config import redact_url

__all__ = ["DatabaseProbe"]


class DatabaseProbe:
    """`check()` says None when PostgreSQL answered within the timeout, else why not."""

    def __init__(
        self, url: str, timeout_seconds: float, *, transaction_pooled: bool = False
    ) -> None:
        self._url = url
        self._timeout = timeout_seconds
        # Behind PgBouncer each probe may reach another server connection,
        # where a cached named statement does not exist (docs/pooling.md).
        self._statement_cache_size = 0 if transaction_pooled else 100  # 100: asyncpg's default
        self._conn: asyncpg.Connection | None = None

    async def check(self) -> str | None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(
                    self._url,
                    timeout=self._timeout,
                    server_settings={"application_name": "faraday-memory-probe"},
                    statement_cache_size=self._statement_cache_size,
                )
            await self._conn.fetchval("SELECT 1", timeout=self._timeout)
            return None
        except asyncio.CancelledError:
            await self.close()
            raise
        except Exception as exc:  # refused, reset, shut down, timed out: all "not answering"
            await self.close()
            reason = " ".join(str(exc).split()) or type(exc).__name__
            return f"{redact_url(self._url)}: {reason}"

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            # A connection to a server that went away cannot close politely.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self._timeout)
            if not conn.is_closed():
                conn.terminate()
