"""Heavy users' semantic candidates come from the HNSW index, which the service role can use.

Users with more memories than the exact limit (lowered here to 100) get the
index's nearest vectors instead of a scan of all of theirs. The test builds
such a user with known vectors and checks both: the recall finds the nearest
memory with its exact similarity, and the plan of that lookup, run as the
role service tokens use (under row-level security), is an index scan.
Skipped, with the reason, where PostgreSQL has no pgvector.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest

from memory_service.domain import ranking
from memory_service.domain.models import Embedding, RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.storage import migrate, session
from memory_service.storage.memories import MemoryStore
from tests.conftest import create_scratch_database, drop_scratch_database
from tests.storage.helpers import service_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL, DIMENSION, MEMORIES = "test-16d", 16, 300
SEMANTIC_ONLY = Weights(0.0, 0.0, 0.0, ranking.DEFAULT_WEIGHTS.half_life, semantic=1.0)


def _text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


@pytest.fixture(scope="module")
async def heavy(pg_admin_url: str) -> AsyncIterator[tuple[str, uuid.UUID, np.ndarray, list[int]]]:
    owner_url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(owner_url)
        if not await migrate.ensure_vector_index(owner_url, MODEL, DIMENSION):
            pytest.skip("this PostgreSQL has no pgvector: no vector index to test")
        conn = await asyncpg.connect(owner_url)
        try:
            user = await conn.fetchval(
                "INSERT INTO users (email) VALUES ('heavy@example.org') RETURNING id"
            )
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO user_memories (user_id, content, category)"
                    " SELECT $1, 'note ' || n, 'fact' FROM generate_series(1, $2) n RETURNING id",
                    user,
                    MEMORIES,
                )
            ]
            rng = np.random.default_rng(3)
            vectors = rng.standard_normal((MEMORIES, DIMENSION))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            await conn.executemany(
                "INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)"
                " VALUES ($1, $2, $3, $4::text::vector)",
                [(user, i, MODEL, _text(v)) for i, v in zip(ids, vectors, strict=True)],
            )
            await conn.execute("ANALYZE memory_embeddings")
        finally:
            await conn.close()
        yield owner_url, user, vectors, ids
    finally:
        await drop_scratch_database(pg_admin_url, owner_url)


async def test_a_heavy_user_gets_the_nearest_through_the_index(heavy) -> None:
    owner_url, user, vectors, ids = heavy
    db = service_database(owner_url)
    await db.open()
    try:
        store = MemoryStore(db, vectors=True, semantic_exact_max=100)
        target = 17
        query = RecallQuery(
            user_id=user,
            weights=SEMANTIC_ONLY,
            limit=5,
            query_embedding=Embedding(MODEL, tuple(float(x) for x in vectors[target])),
        )
        with session.acting_as(session.ALL_USERS):
            got = await store.recall(query, EVERYTHING, log=False)
    finally:
        await db.close()
    assert got[0].memory.id == ids[target]
    assert got[0].semantic_score == pytest.approx(1.0, abs=1e-6)
    exact = sorted(range(MEMORIES), key=lambda i: -float(vectors[i] @ vectors[target]))[:5]
    assert [s.memory.id for s in got] == [ids[i] for i in exact]

    conn = await asyncpg.connect(migrate.platform_role_url(owner_url))
    try:
        async with conn.transaction():
            # 300 rows are cheaper to sort than to look up: the question
            # here is whether the role may use the index at all.
            await conn.execute(
                "SELECT set_config('faraday.acting_user', '*', true),"
                " set_config('enable_seqscan', 'off', true), set_config('enable_sort', 'off', true)"
            )
            plan = await conn.fetch(
                f"EXPLAIN SELECT memory_id FROM memory_embeddings"
                f" WHERE user_id = $1 AND model = '{MODEL}'"
                f" ORDER BY embedding::vector({DIMENSION}) <=> $2::text::vector({DIMENSION})"
                " LIMIT 200",
                user,
                _text(vectors[target]),
            )
    finally:
        await conn.close()
    assert migrate.vector_index_name(MODEL, DIMENSION) in "\n".join(r[0] for r in plan)
