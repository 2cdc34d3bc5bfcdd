"""Whether a streaming replica may answer a read now: how far behind the primary it is.

The replica is a hot standby of the primary (PostgreSQL streaming
replication). A monitor, on one connection of its own to each server (not
through the pools, as storage/probe.py explains), repeatedly notes the time
`t0`, reads the primary's WAL position, and asks the replica whether it has
replayed up to it. When it has, every transaction that committed on the
primary before `t0` is visible on the replica: `t0` is the replica's
"caught up to" moment. From that follow the two rules Database applies to a
read that accepts a replica (docs/scaling.md):

- bounded staleness: the replica answers only while now - caught_up_to is at
  most max_lag_seconds, so it never misses a commit older than that;
- read-your-writes within this process: only when caught_up_to is after the
  last write transaction this process committed, so a read after a write made
  through this process sees that write (else the primary answers).

An unreachable replica stops advancing caught_up_to, so within max_lag_seconds
every read goes to the primary again; a failure to begin a transaction on it
sends that read to the primary at once and marks the replica behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

import asyncpg

from memory_service.config import redact_url

__all__ = ["ReplicaMonitor"]

logger = logging.getLogger(__name__)

# The primary's WAL position, and whether the replica has replayed up to it
# (pg_lsn compares as a position; a server not in recovery is no replica).
_PRIMARY_LSN = "SELECT pg_current_wal_lsn()"
_REPLAYED = "SELECT pg_is_in_recovery() AND pg_last_wal_replay_lsn() >= $1::pg_lsn"


class ReplicaMonitor:
    """Follows the replica's lag; `fresh_for(t)` says whether it may answer a read now."""

    def __init__(self, primary_url: str, replica_url: str, max_lag_seconds: float) -> None:
        self._primary_url = primary_url
        self._replica_url = replica_url
        self.max_lag_seconds = max_lag_seconds
        # Often enough that a caught-up replica stays usable between samples.
        self.interval_seconds = min(1.0, max_lag_seconds / 4)
        self.caught_up_to = -math.inf  # time.monotonic() of the last sample it had replayed
        self._primary: asyncpg.Connection | None = None
        self._replica: asyncpg.Connection | None = None
        self._was_usable = False

    def fresh_for(self, last_write: float) -> bool:
        """Whether the replica has every commit older than max_lag_seconds and this
        process's last write (time.monotonic() of its commit)."""
        caught_up_to = self.caught_up_to
        return (
            caught_up_to >= last_write and time.monotonic() - caught_up_to <= self.max_lag_seconds
        )

    def mark_behind(self, reason: str) -> None:
        """A read could not begin on the replica: primary only until the next good sample."""
        self.caught_up_to = -math.inf
        self._note(False, reason)

    async def sample(self) -> bool:
        """One measurement; True when the replica had replayed the primary's position."""
        started = time.monotonic()
        try:
            if self._primary is None or self._primary.is_closed():
                self._primary = await self._connect(self._primary_url)
            lsn = await self._primary.fetchval(_PRIMARY_LSN, timeout=self._timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the primary's own trouble is the health probe's business
            await _close(self._primary)
            self._primary = None
            self._note(False, f"primary {redact_url(self._primary_url)}: {_reason(exc)}")
            return False
        try:
            if self._replica is None or self._replica.is_closed():
                self._replica = await self._connect(self._replica_url)
            replayed = bool(await self._replica.fetchval(_REPLAYED, lsn, timeout=self._timeout))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _close(self._replica)
            self._replica = None
            self._note(False, f"replica {redact_url(self._replica_url)}: {_reason(exc)}")
            return False
        if replayed:
            self.caught_up_to = max(self.caught_up_to, started)
        self._note(self.fresh_for(-math.inf), "lagging")
        return replayed

    async def run(self) -> None:
        """Sample until cancelled."""
        try:
            while True:
                await self.sample()
                await asyncio.sleep(self.interval_seconds)
        finally:
            await self.close()

    async def close(self) -> None:
        for conn in (self._primary, self._replica):
            await _close(conn)
        self._primary = self._replica = None

    @property
    def _timeout(self) -> float:
        return max(self.max_lag_seconds, 1.0)

    async def _connect(self, url: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            url,
            timeout=self._timeout,
            server_settings={"application_name": "faraday-memory-replica-monitor"},
        )

    def _note(self, usable: bool, reason: str) -> None:
        """Log when reads start or stop going to the replica, not at every sample."""
        if usable and not self._was_usable:
            logger.info("replica reads on: %s caught up", redact_url(self._replica_url))
        elif not usable and self._was_usable:
            logger.warning("replica reads off, the primary answers them: %s", reason)
        self._was_usable = usable


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _close(conn: asyncpg.Connection | None) -> None:
    if conn is not None and not conn.is_closed():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 1.0)
        if not conn.is_closed():
            conn.terminate()
