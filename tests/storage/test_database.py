"""The pools: one per role, sized from pool_size; session state never leaks to the next request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from memory_service.config import Settings
from memory_service.domain import audit
from memory_service.domain.models import Feedback, NewMemory, RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.server import pool_settings
from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.memories import MemoryStore
from tests.conftest import create_scratch_database, drop_scratch_database

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _pools(owner_url: str, *, size: int, user_size: int, max_overflow: int = 10) -> PoolSettings:
    """The scratch database's pools, logged in as the service's two roles."""
    return PoolSettings(
        url=migrate.app_role_url(owner_url),
        platform_url=migrate.platform_role_url(owner_url),
        size=size,
        user_size=user_size,
        max_overflow=max_overflow,
    )


@pytest.fixture
async def one_connection_pool(pg_admin_url: str) -> AsyncIterator[Database]:
    """One connection per role: a user-scoped block always reuses the same one."""
    owner_url = await create_scratch_database(pg_admin_url)
    await migrate.upgrade(owner_url)
    db = Database(_pools(owner_url, size=2, user_size=1, max_overflow=0))
    await db.open()
    try:
        with session.acting_as(session.ALL_USERS):
            async with db.connection() as conn:
                for n in range(2):
                    user = await conn.fetchval(
                        "INSERT INTO users (email) VALUES ($1) RETURNING id", f"u{n}@x.example"
                    )
                    await conn.execute(
                        "INSERT INTO user_memories (user_id, content, category)"
                        " VALUES ($1, 'm', 'c')",
                        user,
                    )
        yield db
    finally:
        await db.close()
        await drop_scratch_database(pg_admin_url, owner_url)


async def test_acting_user_and_timeout_never_reach_the_next_request(
    one_connection_pool: Database,
) -> None:
    db = one_connection_pool  # one user connection: every user-scoped block reuses it
    async with db.connection() as conn:
        users = [r["user_id"] for r in await conn.fetch("SELECT user_id FROM user_memories")]
    assert users == []  # no acting user: row-level security shows nothing
    with session.acting_as(session.ALL_USERS):
        async with db.connection() as conn:
            users = [r["user_id"] for r in await conn.fetch("SELECT user_id FROM user_memories")]
    assert len(users) == 2
    with session.acting_as(users[0]):
        async with db.connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            seen = await conn.fetch("SELECT user_id FROM user_memories")  # no WHERE clause
            assert [r["user_id"] for r in seen] == [users[0]]
    token = session.deadline.set(None)
    try:
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # same connection
            assert await conn.fetchval("SELECT current_setting('faraday.acting_user', true)") == ""
            assert await conn.fetchval("SELECT count(*) FROM user_memories") == 0
            assert await conn.fetchval("SHOW statement_timeout") == "30s"
    finally:
        session.deadline.reset(token)


@pytest.mark.parametrize(
    "name",
    [
        "assistant-backend",
        "it's'); SELECT pg_sleep(10); --",
        "back\\slash \\' E'\\x27' $$ $q$ \"quoted\"",
        "nul\x00byte",
        "Lehrer Müller 🍎 لوحة",
        "lone \ud800 surrogate",
        "x" * 1000,
    ],
)
async def test_the_actor_reaches_postgresql_verbatim_and_never_the_next_request(
    one_connection_pool: Database, name: str
) -> None:
    """A token's name may hold any character: it is spliced into BEGIN as hex, never as text."""
    db = one_connection_pool
    token = session.actor.set(f"service:{name}")
    try:
        async with db.connection() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            actor = await conn.fetchval("SELECT current_setting('faraday.actor')")
    finally:
        session.actor.reset(token)
    expected = f"service:{name}".replace("\x00", "")[:255]
    assert actor == expected.encode("utf-8", "replace").decode()
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # same connection
        assert await conn.fetchval("SELECT current_setting('faraday.actor')") == "system"


async def test_a_failed_block_rolls_back_and_the_connection_stays_usable(
    one_connection_pool: Database,
) -> None:
    db = one_connection_pool
    with session.acting_as(session.ALL_USERS), pytest.raises(RuntimeError):
        async with db.connection() as conn:
            await conn.execute("DELETE FROM user_memories")
            raise RuntimeError("the handler failed half-way")
    with session.acting_as(session.ALL_USERS):
        async with db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM user_memories") == 2


async def test_async_commit_holds_for_its_own_transaction_only(
    one_connection_pool: Database,
) -> None:
    db = one_connection_pool
    async with db.connection(async_commit=True) as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert await conn.fetchval("SHOW synchronous_commit") == "off"
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # same connection
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
    # A transaction that carries an audit row stays durable whatever it asks.
    token = audit.current.set(audit.AuditEvent("service", "t", "/x.Y/Z", None))
    try:
        async with db.connection(async_commit=True) as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "on"
    finally:
        audit.current.reset(token)


def _idle_user_connections(db: Database) -> int:
    return next(idle for name, _open, idle, _max in db.pool_sizes() if name == "user")


async def test_a_read_returns_before_its_commit_and_its_connection_comes_back_clean(
    one_connection_pool: Database,
) -> None:
    """read_only: a READ ONLY transaction whose COMMIT and release run after it returns."""
    db = one_connection_pool  # one user connection: every user-scoped block reuses it
    with session.acting_as(session.ALL_USERS):
        users = [r["user_id"] for r in await db.fetch("SELECT user_id FROM user_memories")]
    with session.acting_as(users[0]):
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await db.fetch("DELETE FROM user_memories RETURNING id", read_only=True)
        async with db.connection(read_only=True) as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            assert await conn.fetchval("SHOW transaction_read_only") == "on"
        rows = await db.fetch("SELECT user_id FROM user_memories", read_only=True)
        assert [r["user_id"] for r in rows] == [users[0]]
        assert _idle_user_connections(db) == 0  # still out: its COMMIT has not run yet
    # The next block waits for that connection (the pool has one) and finds it
    # committed and reset: no acting user, no READ ONLY, nothing deleted.
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == pid
        assert await conn.fetchval("SHOW transaction_read_only") == "off"
        assert await conn.fetchval("SELECT current_setting('faraday.acting_user', true)") == ""
    with session.acting_as(session.ALL_USERS):
        assert len(await db.fetch("SELECT id FROM user_memories", read_only=True)) == 2
    # An audited call's read carries no audit row (AuditLog.record writes it),
    # so it ends off the caller's path too.
    token = audit.current.set(audit.AuditEvent("service", "t", "/x.Y/Z", None))
    try:
        with session.acting_as(users[0]):
            await db.fetch("SELECT 1", read_only=True)
            assert _idle_user_connections(db) == 0
    finally:
        audit.current.reset(token)


async def test_close_waits_for_the_reads_still_committing(pg_admin_url: str) -> None:
    owner_url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(owner_url)
        db = Database(_pools(owner_url, size=4, user_size=2))
        await db.open()
        for _ in range(3):
            assert await db.fetch("SELECT 1 AS one", read_only=True) == [(1,)]
        await db.close()  # with those three COMMITs not yet sent
        assert list(db.pool_sizes()) == []
        owner = await asyncpg.connect(owner_url)
        try:
            for _ in range(50):  # a closed connection's backend takes a moment to exit
                left = await owner.fetch(
                    "SELECT state FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'faraday-memory'"
                )
                assert all(r["state"] != "idle in transaction" for r in left)
                if not left:
                    break
                await asyncio.sleep(0.1)
        finally:
            await owner.close()
        assert left == []  # every connection closed
    finally:
        await drop_scratch_database(pg_admin_url, owner_url)


class _SeesSynchronousCommit(Database):
    """A Database that notes synchronous_commit in every transaction it opens."""

    seen: list[str]

    @asynccontextmanager
    async def connection(self, **kwargs: Any) -> AsyncIterator[asyncpg.Connection]:
        async with super().connection(**kwargs) as conn:
            self.seen.append(await conn.fetchval("SHOW synchronous_commit"))
            yield conn


async def test_only_a_logged_recall_commits_asynchronously(pg_admin_url: str) -> None:
    """Recall's bookkeeping skips the WAL flush; stores and feedback wait for it."""
    owner_url = await create_scratch_database(pg_admin_url)
    await migrate.upgrade(owner_url)
    db = _SeesSynchronousCommit(_pools(owner_url, size=2, user_size=1))
    db.seen = []
    await db.open()
    try:
        with session.acting_as(session.ALL_USERS):
            async with db.connection() as conn:
                user = await conn.fetchval(
                    "INSERT INTO users (email) VALUES ('a@x.example') RETURNING id"
                )
            store = MemoryStore(db)
            new = NewMemory(user, None, "tea with milk", {}, 0.5, "fact", [], None, None, None, {})
            db.seen.clear()
            stored = await store.store(new)
            assert db.seen == ["on"]
            db.seen.clear()
            feedback = Feedback(stored.memory.id, True, None, "", {})
            await store.record_feedback(feedback, 0.9, 0.1, EVERYTHING)
            assert db.seen and set(db.seen) == {"on"}
            weights = Weights(1.0, 1.0, 1.0, timedelta(days=30))
            query = RecallQuery(user, weights, query="tea")
            db.seen.clear()
            assert [m.memory.id for m in await store.recall(query, EVERYTHING, log=True)] == [
                stored.memory.id
            ]
            assert db.seen == ["off"]
            db.seen.clear()
            await store.recall(query, EVERYTHING, log=False)
            assert db.seen == ["on"]  # writes nothing: no commit to wait for either way
            async with db.connection() as conn:
                logged = await conn.fetchval(
                    "SELECT count(*) FROM memory_interactions WHERE interaction_type = 'recall'"
                )
            assert logged == 1  # the logged recall only
    finally:
        await db.close()
        await drop_scratch_database(pg_admin_url, owner_url)


async def test_the_pools_split_pool_size_between_the_roles(pg_admin_url: str) -> None:
    owner_url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(owner_url)
        sizes = pool_settings(Settings(pool_size=4, pool_max_overflow=0), "", "")
        db = Database(
            replace(
                sizes,
                url=migrate.app_role_url(owner_url),
                platform_url=migrate.platform_role_url(owner_url),
            )
        )
        await db.open()
        owner = await asyncpg.connect(owner_url)
        try:
            opened = await owner.fetch(
                "SELECT usename, count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'faraday-memory'"
                " GROUP BY usename"
            )
        finally:
            await owner.close()
            await db.close()
    finally:
        await drop_scratch_database(pg_admin_url, owner_url)
    # A quarter of pool_size for user JWTs, the rest for service tokens and sweeps.
    assert dict(opened) == {"faraday_app": 1, "faraday_platform": 3}
    assert pool_settings(Settings(), "", "").user_size == 5
    assert pool_settings(Settings(pool_size=2, user_pool_size=0), "", "").user_size == 1
    with pytest.raises(ValueError, match="user pool size 2"):
        PoolSettings(url="", platform_url="", size=2, user_size=2)
    # The settings refuse it first, at start-up (tests/unit/test_config.py).
    with pytest.raises(ValueError, match="must be below FARADAY_POOL_SIZE"):
        Settings(pool_size=2, user_pool_size=2)
