"""`memory-service embed`: the backfill on real PostgreSQL with the real WordLlama model.

Skips, saying why, without pgvector (the machine's PostgreSQL 15) or the
`embeddings` extra. A few hundred memories keep it to seconds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from memory_service.domain.models import MemoryPatch
from memory_service.domain.principal import EVERYTHING
from memory_service.embedding import Embedder, ModelUnavailable, load_model
from memory_service.services import backfill
from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.embeddings import _WRITE, EmbeddingStore, Unembedded
from memory_service.storage.memories import MemoryStore
from tests.conftest import create_scratch_database, drop_scratch_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "wordllama-l2-supercat-256"
USERS = 3
PER_USER = 100  # plus one expired memory each, which is never embedded
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> Embedder:
    try:
        return load_model(MODEL)
    except ModelUnavailable as exc:
        pytest.skip(f"no WordLlama model: {exc}")


@pytest.fixture(scope="module")
async def owner_url(pg_admin_url: str) -> AsyncIterator[str]:
    url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(url)
        conn = await asyncpg.connect(url)
        try:
            vectors = await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL")
        finally:
            await conn.close()
        if not vectors:
            pytest.skip("this PostgreSQL has no pgvector: no memory_embeddings table")
        yield url
    finally:
        await drop_scratch_database(pg_admin_url, url)


@pytest.fixture
async def owner(owner_url: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection, on USERS users with PER_USER memories each (and one expired)."""
    conn = await asyncpg.connect(owner_url)
    await conn.execute("TRUNCATE users, user_memories RESTART IDENTITY CASCADE")
    for n in range(USERS):
        user = await conn.fetchval(
            "INSERT INTO users (email) VALUES ($1) RETURNING id", f"t{n}@school.example.org"
        )
        await conn.execute(
            "INSERT INTO user_memories (user_id, content, category)"
            " SELECT $1, 'student ' || i || ' needs extra time on fractions tests', 'fact'"
            " FROM generate_series(1, $2) i",
            user,
            PER_USER,
        )
        await conn.execute(
            "INSERT INTO user_memories (user_id, content, category, expires_at)"
            " VALUES ($1, 'expired note', 'fact', now() - interval '1 minute')",
            user,
        )
    yield conn
    await conn.close()


@pytest.fixture
async def db(owner_url: str) -> AsyncIterator[Database]:
    app_url = migrate.app_role_url(owner_url)
    database = Database(
        PoolSettings(
            url=app_url,
            platform_url=migrate.platform_role_url(app_url),
            size=2,
            user_size=1,
            max_overflow=0,
        )
    )
    await database.open()
    yield database
    await database.close()


async def _vectors(owner: asyncpg.Connection, model: str = MODEL) -> dict[int, int]:
    """memory id -> how many vectors of `model` it has."""
    rows = await owner.fetch(
        "SELECT memory_id, count(*) FROM memory_embeddings WHERE model = $1 GROUP BY memory_id",
        model,
    )
    return {r[0]: r[1] for r in rows}


async def _stored_vector(owner: asyncpg.Connection, memory_id: int) -> np.ndarray:
    text = await owner.fetchval(
        "SELECT embedding::text FROM memory_embeddings WHERE memory_id = $1 AND model = $2",
        memory_id,
        MODEL,
    )
    return np.array([float(x) for x in text.strip("[]").split(",")])


async def test_fills_every_missing_memory_once_and_a_rerun_does_nothing(owner, db, model) -> None:
    live = {
        r[0] for r in await owner.fetch("SELECT id FROM user_memories WHERE expires_at IS NULL")
    }
    # One memory already done: not read, not written twice.
    await owner.execute(
        "INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)"
        " SELECT user_id, id, $1, $2::text::vector FROM user_memories WHERE id = 1",
        MODEL,
        "[" + ",".join(["0.0625"] * 256) + "]",
    )
    store = EmbeddingStore(db)
    assert await backfill.count_missing(store, MODEL, None) == len(live) - 1
    batches: list[int] = []
    done = await backfill.backfill(
        store, model, batch_size=64, on_batch=lambda b: batches.append(b.read)
    )
    assert (done.read, done.written, done.changed) == (len(live) - 1,) * 2 + (0,)
    assert batches == [64, 64, 64, 64, len(live) - 1 - 256]
    assert await _vectors(owner) == dict.fromkeys(live, 1)  # every live memory, once
    # Each memory got its own content's vector (and the done one kept its own).
    for memory_id in (2, 150, 299):
        content = await owner.fetchval("SELECT content FROM user_memories WHERE id = $1", memory_id)
        expected = model.embed([content])[0]
        assert np.allclose(await _stored_vector(owner, memory_id), expected, atol=1e-6)
    assert np.allclose(await _stored_vector(owner, 1), 0.0625)
    again = await backfill.backfill(store, model, batch_size=64)
    assert (again.read, again.written) == (0, 0)
    assert await _vectors(owner) == dict.fromkeys(live, 1)


async def test_a_limited_run_then_a_full_run_finishes_the_rest(owner, db, model) -> None:
    store = EmbeddingStore(db)
    first = await backfill.backfill(store, model, batch_size=32, limit=50)
    assert (first.read, first.written) == (50, 50)
    assert len(await _vectors(owner)) == 50
    rest = await backfill.backfill(store, model, batch_size=32)
    assert (rest.read, rest.written) == (USERS * PER_USER - 50,) * 2
    assert sum((await _vectors(owner)).values()) == USERS * PER_USER


async def test_one_user_only(owner, db, model) -> None:
    user = await owner.fetchval("SELECT id FROM users ORDER BY email LIMIT 1")
    done = await backfill.backfill(EmbeddingStore(db), model, batch_size=64, user_id=user)
    assert done.written == PER_USER
    owners = await owner.fetch("SELECT DISTINCT user_id FROM memory_embeddings")
    assert [r[0] for r in owners] == [user]


async def test_content_changed_after_the_read_gets_no_old_vector(owner, db, model) -> None:
    """The backfill's steps one by one, with UpdateMemory's own statement in between."""
    store = EmbeddingStore(db)
    with session.acting_as(session.ALL_USERS):
        batch = await store.read_missing(MODEL, None, 0, 10)
    changed = batch[3]
    with session.acting_as(changed.user_id):
        await MemoryStore(db, vectors=True).update(
            MemoryPatch(changed.id, {"content": "prefers geometry puzzles"}, None),
            ["content"],
            EVERYTHING,
        )
    vectors = model.embed([m.content for m in batch])
    with session.acting_as(session.ALL_USERS):
        written = await store.write(MODEL, batch, vectors.tolist())
        assert [m.id for m in written] == [m.id for m in batch if m is not changed]
    assert changed.id not in await _vectors(owner)
    # The next run embeds the new content.
    done = await backfill.backfill(store, model, batch_size=64, limit=1)
    assert done.written == 1
    expected = model.embed(["prefers geometry puzzles"])[0]
    assert np.allclose(await _stored_vector(owner, changed.id), expected, atol=1e-6)


async def test_write_waits_for_an_uncommitted_update_then_skips_it(
    owner, owner_url, db, model
) -> None:
    """An update that has not committed yet holds its row: the write waits, then checks."""
    store = EmbeddingStore(db)
    with session.acting_as(session.ALL_USERS):
        batch = await store.read_missing(MODEL, None, 0, 5)
    vectors = model.embed([m.content for m in batch]).tolist()
    updater = await asyncpg.connect(owner_url)
    try:
        transaction = updater.transaction()
        await transaction.start()
        await updater.execute(
            "UPDATE user_memories SET content = 'new', version = version + 1 WHERE id = $1",
            batch[0].id,
        )

        async def write() -> list[Unembedded]:
            with session.acting_as(session.ALL_USERS):
                return await store.write(MODEL, batch, vectors)

        writing = asyncio.create_task(write())
        # Deterministic: wait until PostgreSQL reports the write blocked on the row lock.
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while not await owner.fetchval(waiting):
            assert not writing.done(), "the write did not wait for the row lock"
            await asyncio.sleep(0.01)
        await transaction.commit()
        assert [m.id for m in await writing] == [m.id for m in batch[1:]]
    finally:
        await updater.close()
    assert batch[0].id not in await _vectors(owner)


async def test_an_update_that_waited_for_the_write_loses_the_old_vector(
    owner, owner_url, db, model
) -> None:
    """The other order: the write holds the row, and an UpdateMemory statement that
    started meanwhile deletes vectors from a snapshot that cannot see the new one."""
    store = EmbeddingStore(db)
    with session.acting_as(session.ALL_USERS):
        (memory,) = await store.read_missing(MODEL, None, 0, 1)
    vector = model.embed([memory.content])[0].tolist()
    # The backfill's own statement, held open on a connection of the platform role.
    writer = await asyncpg.connect(migrate.platform_role_url(migrate.app_role_url(owner_url)))
    try:
        transaction = writer.transaction()
        await transaction.start()
        await writer.execute("SELECT set_config('faraday.acting_user', '*', true)")
        params = {"model": MODEL, "ids": [memory.id], "versions": [memory.version]}
        await writer.execute(_WRITE.sql, *_WRITE.args(params | {"embeddings": [str(vector)]}))

        async def update() -> None:
            with session.acting_as(memory.user_id):
                await MemoryStore(db, vectors=True).update(
                    MemoryPatch(memory.id, {"content": "prefers geometry puzzles"}, None),
                    ["content"],
                    EVERYTHING,
                )

        updating = asyncio.create_task(update())
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        while not await owner.fetchval(waiting):
            assert not updating.done(), "the update did not wait for the write's row lock"
            await asyncio.sleep(0.01)
        await transaction.commit()
        await updating
    finally:
        await writer.close()
    assert memory.id in await _vectors(owner)  # the update's delete missed it
    with session.acting_as(session.ALL_USERS):
        assert await store.drop_changed(MODEL, [memory]) == 1
    assert memory.id not in await _vectors(owner)


async def test_drop_other_models(owner, db, model) -> None:
    await owner.execute(
        "INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)"
        " SELECT user_id, id, 'old-model-3d', '[1,0,0]' FROM user_memories"
    )
    store = EmbeddingStore(db)
    await backfill.backfill(store, model, batch_size=128)
    one_user = await owner.fetchval("SELECT id FROM users ORDER BY email LIMIT 1")
    assert await backfill.drop_other_models(store, MODEL, one_user, 40) == PER_USER + 1
    assert await backfill.drop_other_models(store, MODEL, None, 40) == 2 * (PER_USER + 1)
    assert not await _vectors(owner, "old-model-3d")
    assert sum((await _vectors(owner)).values()) == USERS * PER_USER


def _cli(owner_url: str, *args: str, model: str = MODEL) -> subprocess.CompletedProcess[str]:
    """`memory-service embed` in a process of its own, as the service role."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FARADAY_DATABASE_URL": migrate.app_role_url(owner_url),
        "FARADAY_EMBEDDING_MODEL": model,
        "FARADAY_EMBEDDING_DIMENSION": "3",
    }
    return subprocess.run(
        [sys.executable, "-m", "memory_service.cli", "embed", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_shows_progress_and_exits_0(owner, owner_url, model) -> None:
    run = await asyncio.to_thread(_cli, owner_url, "--batch-size", "100", "--drop-other-models")
    assert run.returncode == 0, run.stderr
    total = USERS * PER_USER
    assert f"{total}/{total}" in run.stderr  # tqdm's bar: done/total, rate and ETA
    assert "memories/s" in run.stderr
    assert f"embedded {total} memories with {MODEL}" in run.stdout
    assert "dropped 0 vectors of other models" in run.stdout
    assert sum((await _vectors(owner)).values()) == total


async def test_cli_refuses_a_model_whose_vectors_callers_send() -> None:
    # Refused before any database is opened: this one does not exist.
    run = await asyncio.to_thread(_cli, "postgresql://nobody@127.0.0.1:1/none", model="caller-3d")
    assert run.returncode != 0
    assert run.stderr.count("\n") == 1 and "must send them" in run.stderr, run.stderr


async def test_cli_without_pgvector_says_so_in_one_line(pg_admin_url, model) -> None:
    url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(url, "0010")  # as on a server without pgvector
        run = await asyncio.to_thread(_cli, url)
    finally:
        await drop_scratch_database(pg_admin_url, url)
    assert run.returncode != 0
    # The last line; alembic's import logs its plugins at INFO before it.
    assert run.stderr.splitlines()[-1].startswith("error: this database has no pgvector")
