"""The batched writer of recall bookkeeping (storage/recall_log.py), against PostgreSQL.

What it promises: queued rows are written in the order queued, each recall
whole; a memory deleted meanwhile (or its user erased) gets no row and
costs the others nothing; the queue is bounded by waiting, never by
dropping; rows wait while the database is unavailable; close() and a
cancelled flush() still write everything queued.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from memory_service.domain.errors import Unavailable
from memory_service.storage.database import Database
from memory_service.storage.recall_log import RecallLog
from tests.conftest import migrated_scratch_database
from tests.storage.helpers import service_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

LONG = 60.0  # an interval no test waits for: only flush() or close() writes


@pytest.fixture(scope="module")
async def owner_url(pg_admin_url: str) -> AsyncIterator[str]:
    async with migrated_scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture
async def owner(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(owner_url)
    yield conn
    await conn.close()


@pytest.fixture
async def db(owner_url: str) -> AsyncIterator[Database]:
    database = service_database(owner_url, size=3)
    await database.open()
    yield database
    await database.close()


async def new_user(owner: asyncpg.Connection, memories: int) -> tuple[uuid.UUID, list[int]]:
    user = await owner.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", f"{uuid.uuid4().hex}@x.example"
    )
    ids = [
        await owner.fetchval(
            "INSERT INTO user_memories (user_id, content, importance, category)"
            " VALUES ($1, $2, 0.5, 'fact') RETURNING id",
            user,
            f"memory {n}",
        )
        for n in range(memories)
    ]
    return user, ids


async def logged(owner: asyncpg.Connection, user: uuid.UUID) -> list[tuple[int, int, str]]:
    """(memory id, rank, query) of the user's recall rows, in id order."""
    rows = await owner.fetch(
        "SELECT memory_id, (context->>'rank')::int AS rank, context->>'query' AS query"
        " FROM memory_interactions WHERE user_id = $1 AND interaction_type = 'recall'"
        " ORDER BY id",
        user,
    )
    return [(r["memory_id"], r["rank"], r["query"]) for r in rows]


async def accessed(owner: asyncpg.Connection, user: uuid.UUID) -> set[int]:
    rows = await owner.fetch(
        "SELECT id FROM user_memories WHERE user_id = $1 AND last_accessed IS NOT NULL", user
    )
    return {r["id"] for r in rows}


async def test_the_interval_writes_recalls_in_order_with_ranks_and_the_bumps_asked_for(
    db: Database, owner: asyncpg.Connection
) -> None:
    user, ids = await new_user(owner, 4)
    log = RecallLog(db, 0.05, 1000)
    log.start()
    try:
        await log.add(user, [(ids[2], 0.9, True), (ids[0], 0.8, True)], "first")
        # Not to be bumped: a shared memory a profile-limited caller recalled.
        await log.add(user, [(ids[1], 0.7, True), (ids[3], 0.6, False)], "second")
        assert await logged(owner, user) == []  # queued, not yet written
        for _ in range(100):  # the writer's interval, generously
            if await logged(owner, user):
                break
            await asyncio.sleep(0.05)
        assert await logged(owner, user) == [
            (ids[2], 1, "first"),
            (ids[0], 2, "first"),
            (ids[1], 1, "second"),
            (ids[3], 2, "second"),
        ]
        assert await accessed(owner, user) == {ids[0], ids[1], ids[2]}
        assert log.pending_rows == 0
    finally:
        await log.close()


async def test_a_memory_deleted_before_the_write_gets_no_row_and_the_rest_do(
    db: Database, owner: asyncpg.Connection
) -> None:
    user, ids = await new_user(owner, 3)
    log = RecallLog(db, LONG, 1000)
    await log.add(user, [(ids[0], 0.9, True), (ids[1], 0.8, True), (ids[2], 0.7, True)], "q")
    await owner.execute("DELETE FROM user_memories WHERE id = $1", ids[1])
    await log.flush()
    assert await logged(owner, user) == [(ids[0], 1, "q"), (ids[2], 3, "q")]
    assert await accessed(owner, user) == {ids[0], ids[2]}


async def test_a_delete_committing_during_the_write_is_retried_not_lost(
    db: Database, owner: asyncpg.Connection, owner_url: str
) -> None:
    user, ids = await new_user(owner, 2)
    log = RecallLog(db, LONG, 1000)
    await log.add(user, [(ids[0], 0.9, True), (ids[1], 0.8, True)], "q")
    deleting = await asyncpg.connect(owner_url)
    try:
        tx = deleting.transaction()
        await tx.start()
        await deleting.execute("DELETE FROM user_memories WHERE id = $1", ids[1])
        flush = asyncio.create_task(log.flush())
        await asyncio.sleep(0.5)
        # The bump skipped the locked row; the insert's foreign-key check waits for it.
        assert not flush.done()
        await tx.commit()
        await asyncio.wait_for(flush, 10)
    finally:
        await deleting.close()
    assert await logged(owner, user) == [(ids[0], 1, "q")]
    assert log.pending_rows == 0


async def test_an_erased_user_gets_nothing_back(db: Database, owner: asyncpg.Connection) -> None:
    user, ids = await new_user(owner, 2)
    log = RecallLog(db, LONG, 1000)
    await log.add(user, [(ids[0], 0.9, True), (ids[1], 0.8, True)], "q")
    await owner.execute("DELETE FROM user_memories WHERE user_id = $1", user)
    await owner.execute("DELETE FROM users WHERE id = $1", user)
    await log.flush()
    assert await logged(owner, user) == []
    assert await owner.fetchval("SELECT count(*) FROM user_memories WHERE user_id = $1", user) == 0


async def test_a_full_queue_makes_the_recall_wait_and_drops_nothing(
    db: Database, owner: asyncpg.Connection
) -> None:
    user, ids = await new_user(owner, 10)
    log = RecallLog(db, LONG, 100)
    recall = [(memory_id, 0.5, True) for memory_id in ids]
    for n in range(10):
        await log.add(user, recall, f"q{n}")
    assert log.pending_rows == 100
    waiting = asyncio.create_task(log.add(user, recall, "q10"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await log.flush()
    await asyncio.wait_for(waiting, 5)
    await log.flush()
    rows = await logged(owner, user)
    assert len(rows) == 110
    assert [q for _, rank, q in rows if rank == 1] == [f"q{n}" for n in range(11)]


async def test_rows_wait_while_the_database_is_unavailable(
    db: Database, owner: asyncpg.Connection
) -> None:
    user, ids = await new_user(owner, 2)
    log = RecallLog(db, LONG, 1000)
    await log.add(user, [(ids[0], 0.9, True), (ids[1], 0.8, True)], "q")
    await db.close()
    with pytest.raises(Unavailable):
        await log.flush()
    assert log.pending_rows == 2
    await db.open()
    await log.flush()
    assert await logged(owner, user) == [(ids[0], 1, "q"), (ids[1], 2, "q")]


async def test_close_writes_what_is_queued_and_then_refuses_more(
    db: Database, owner: asyncpg.Connection
) -> None:
    user, ids = await new_user(owner, 1)
    log = RecallLog(db, LONG, 1000)
    log.start()
    await log.add(user, [(ids[0], 0.9, True)], "q")
    await log.close()
    assert await logged(owner, user) == [(ids[0], 1, "q")]
    with pytest.raises(RuntimeError):
        await log.add(user, [(ids[0], 0.9, True)], "late")


async def test_a_cancelled_flush_still_writes_everything(
    db: Database, owner: asyncpg.Connection
) -> None:
    user, ids = await new_user(owner, 2)
    log = RecallLog(db, LONG, 1000)
    await log.add(user, [(ids[0], 0.9, True), (ids[1], 0.8, True)], "q")
    flush = asyncio.create_task(log.flush())
    await asyncio.sleep(0)  # started
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    await log.flush()  # waits for the write the cancelled call began
    assert await logged(owner, user) == [(ids[0], 1, "q"), (ids[1], 2, "q")]
