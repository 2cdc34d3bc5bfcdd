"""The time partitions of memory_interactions and audit_log (migration 0018).

The service's roles cannot create or drop tables: every change goes through
the schema owner's SECURITY DEFINER functions, which check their arguments
(which table, how far ahead, a retention no shorter than the database's
minimum) and take an advisory lock, so several service processes running
the job serialise. Each call changes at most one partition, in a transaction
of its own with a short lock_timeout: a call that would wait longer for a
lock (ATTACH's lock on the DEFAULT partition, DROP's ACCESS EXCLUSIVE on the
parent) gives up instead of queueing traffic behind it, and is retried a few
times, then at the job's next run.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from memory_service.storage.database import Database

logger = logging.getLogger(__name__)

# Partitioned table -> how many periods ahead of the current one the job
# keeps created: a week of days, the next month. So inserts find their
# partition even when the job has not run for that long (and the DEFAULT
# partition catches them if it has not).
PERIODS_AHEAD = {"memory_interactions": 7, "audit_log": 1}
# A lock wait that timed out is retried this many times, this far apart.
LOCK_ATTEMPTS = 5
LOCK_RETRY_SECONDS = 0.5

_LIST = """
SELECT $1::text AS parent, b.partition, b.lower_bound, b.upper_bound, b.is_default,
       c.reltuples::bigint AS estimated_rows
FROM faraday_partition_bounds($1) b
JOIN pg_class c ON c.oid = ('public.' || quote_ident(b.partition))::regclass
"""
_ADD = "SELECT faraday_add_partition($1, $2)"
_ADOPT = "SELECT faraday_adopt_default_rows($1)"
_DROP = "SELECT faraday_drop_expired_partition($1, $2)"


@dataclass(frozen=True)
class Partition:
    parent: str
    name: str
    lower: datetime | None  # None: from the beginning of time (MINVALUE)
    upper: datetime | None
    is_default: bool
    estimated_rows: int  # pg_class.reltuples: -1 until first vacuumed or analysed


class PartitionStore:
    def __init__(self, db: Database, lock_timeout_seconds: float) -> None:
        self._db = db
        self._lock_timeout_ms = max(1, round(lock_timeout_seconds * 1000))

    async def partitions(self) -> list[Partition]:
        """Every partition of the partitioned tables, oldest first per table."""
        async with self._db.connection() as conn:
            return [
                Partition(
                    r["parent"],
                    r["partition"],
                    r["lower_bound"],
                    r["upper_bound"],
                    r["is_default"],
                    r["estimated_rows"],
                )
                for parent in PERIODS_AHEAD
                for r in await conn.fetch(_LIST, parent)
            ]

    async def create_ahead(self) -> list[str]:
        """Create the partitions of the current period and PERIODS_AHEAD more."""
        created = []
        for parent, ahead in PERIODS_AHEAD.items():
            for periods in range(ahead + 1):
                if name := await self._change(_ADD, parent, periods):
                    created.append(name)
        return created

    async def adopt_default_rows(self) -> list[str]:
        """Move the rows the DEFAULT partitions caught into partitions of their periods."""
        created = []
        for parent in PERIODS_AHEAD:
            while name := await self._change(_ADOPT, parent):
                created.append(name)
        return created

    async def drop_expired(self, retention_days: dict[str, int]) -> list[str]:
        """Drop every partition wholly older than its table's retention (days)."""
        dropped = []
        for parent, days in retention_days.items():
            while name := await self._change(_DROP, parent, days):
                logger.info("dropped partition %s of %s (retention %d days)", name, parent, days)
                dropped.append(name)
        return dropped

    async def _change(self, statement: str, *args: object) -> str | None:
        """One partition function call in its own transaction, retried on lock
        timeouts: what it created or dropped, None if nothing (or no lock)."""
        for attempt in range(1, LOCK_ATTEMPTS + 1):
            try:
                async with self._db.connection() as conn:
                    await conn.execute(
                        "SELECT set_config('lock_timeout', $1, true)", f"{self._lock_timeout_ms}ms"
                    )
                    name: str | None = await conn.fetchval(statement, *args)
                    return name
            except asyncpg.LockNotAvailableError:
                await asyncio.sleep(LOCK_RETRY_SECONDS * attempt)
        logger.warning(
            "partition job: no lock within %d ms in %d attempts (%s %s); next run retries",
            self._lock_timeout_ms,
            LOCK_ATTEMPTS,
            statement,
            args,
        )
        return None
