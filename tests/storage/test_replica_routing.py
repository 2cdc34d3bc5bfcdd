"""Database's replica routing, with the monitor's verdict set by hand.

The "replica" here is the same database as the primary; which pool lent
the read's connection tells where it went. The real streaming replica is
tests/faults/test_replica.py's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.replica import ReplicaMonitor
from tests.conftest import create_scratch_database, drop_scratch_database, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

MAX_LAG = 5.0


@dataclass
class Routed:
    db: Database
    replica: Database
    monitor: ReplicaMonitor
    owner_url: str

    def in_use(self) -> dict[str, int]:
        pools = [*self.db.pool_sizes(), *self.replica.pool_sizes()]
        return {name: size - idle for name, size, idle, _ in pools}

    async def went_to_replica(self, *, read_only_snapshot: bool = False) -> bool:
        """Whether a replica_ok transaction ran on a replica pool's connection."""
        for _ in range(500):  # until the last read's COMMIT has given its connection back
            if not any(self.in_use().values()):
                break
            await asyncio.sleep(0.01)
        with session.acting_as(session.ALL_USERS):
            async with self.db.connection(
                replica_ok=True, read_only_snapshot=read_only_snapshot
            ) as conn:
                read_only = await conn.fetchval("SHOW transaction_read_only") == "on"
                in_use = self.in_use()
        on_replica = in_use["replica_platform"] > 0
        assert in_use["platform"] + in_use["replica_platform"] == 1, in_use
        assert read_only  # on the primary too: a replica_ok read is READ ONLY everywhere
        return on_replica


def _pools(owner_url: str) -> PoolSettings:
    return PoolSettings(
        url=migrate.app_role_url(owner_url),
        platform_url=migrate.platform_role_url(owner_url),
        size=2,
        user_size=1,
        max_overflow=0,
        connect_timeout_seconds=2.0,
    )


async def _routed(owner_url: str, replica_owner_url: str) -> Routed:
    db = Database(_pools(owner_url))
    await db.open()
    replica = Database(_pools(replica_owner_url), replica=True)
    await replica.open()
    monitor = ReplicaMonitor(
        migrate.platform_role_url(owner_url),
        migrate.platform_role_url(replica_owner_url),
        MAX_LAG,
    )
    db.attach_replica(replica, monitor)
    return Routed(db, replica, monitor, owner_url)


@pytest.fixture
async def routed(pg_admin_url: str) -> AsyncIterator[Routed]:
    owner_url = await create_scratch_database(pg_admin_url)
    await migrate.upgrade(owner_url)
    r = await _routed(owner_url, owner_url)
    try:
        yield r
    finally:
        await r.monitor.close()
        await r.db.close()
        await drop_scratch_database(pg_admin_url, owner_url)


async def test_a_read_goes_to_a_fresh_replica_and_never_to_a_stale_one(routed: Routed) -> None:
    db, monitor = routed.db, routed.monitor
    assert not db.replica_fresh()  # no sample yet
    assert not await routed.went_to_replica()
    monitor.caught_up_to = time.monotonic()
    assert db.replica_fresh()
    assert await routed.went_to_replica()
    assert await routed.went_to_replica(read_only_snapshot=True)
    # Not replica_ok: the primary, whatever the replica's state.
    with session.acting_as(session.ALL_USERS):
        async with db.connection() as conn:
            assert await conn.fetchval("SHOW transaction_read_only") == "off"
    # ...and that transaction may have written: reads wait for the replica to have it.
    assert not db.replica_fresh()
    assert not await routed.went_to_replica()
    monitor.caught_up_to = time.monotonic()
    assert await routed.went_to_replica()
    # Caught up, but longer ago than the bound: stale.
    monitor.caught_up_to = time.monotonic() - MAX_LAG - 0.1
    assert not await routed.went_to_replica()


@pytest.mark.parametrize("broken", ["down", "no such database"])
async def test_a_replica_that_cannot_begin_sends_the_read_to_the_primary(
    routed: Routed, broken: str
) -> None:
    if broken == "down":
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    else:  # a login the replica refuses, not an outage
        parts = urlsplit(routed.owner_url)
        url = urlunsplit(parts._replace(path="/faraday_no_such_database"))
    r = await _routed(routed.owner_url, url)  # opens: a replica's pools connect lazily
    try:
        r.monitor.caught_up_to = time.monotonic()
        assert not await r.went_to_replica()  # answered, by the primary
        assert r.monitor.caught_up_to == -math.inf  # marked behind
        assert not await r.monitor.sample()  # and the monitor cannot reach it either
    finally:
        await r.monitor.close()
        await r.db.close()


async def test_the_monitor_finds_no_replica_in_a_primary(routed: Routed) -> None:
    # pg_is_in_recovery() is false: a promoted or misconfigured "replica" is never used.
    assert not await routed.monitor.sample()
    assert routed.monitor.caught_up_to == -math.inf
