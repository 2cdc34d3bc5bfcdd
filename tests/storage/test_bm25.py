"""Recall's BM25 relevance (storage/memories.py) is domain.bm25's, and its term index stays true.

A user's memories are drawn from a small vocabulary, so terms repeat, lengths
vary and document frequencies differ. Each query's relevance scores from
the service role (under row-level security) must equal domain.bm25 computed
in Python from PostgreSQL's own lexemes; then the term index must follow
stores, content updates and deletes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from memory_service.domain import ranking
from memory_service.domain.models import RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.storage import migrate, session
from memory_service.storage.memories import MemoryStore
from tests.conftest import create_scratch_database, drop_scratch_database
from tests.storage.helpers import bm25_relevance, service_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

WORDS = [
    "fractions",
    "decimals",
    "students",
    "quiz",
    "homework",
    "seating",
    "reading",
    "group",
    "parents",
    "email",
    "rubric",
    "feedback",
    "calm",
    "quiet",
    "projector",
    "worksheet",
    "lab",
    "safety",
    "goggles",
    "essay",
]
RELEVANCE_ONLY = Weights(
    importance=0.0, recency=0.0, relevance=1.0, half_life=ranking.DEFAULT_WEIGHTS.half_life
)


@dataclass(frozen=True)
class World:
    store: MemoryStore
    owner: asyncpg.Connection
    user: uuid.UUID


@pytest.fixture(scope="module")
async def world(pg_admin_url: str) -> AsyncIterator[World]:
    owner_url = await create_scratch_database(pg_admin_url)
    await migrate.upgrade(owner_url)
    owner = await asyncpg.connect(owner_url)
    user = await owner.fetchval(
        "INSERT INTO users (email) VALUES ('bm25@example.org') RETURNING id"
    )
    rng = random.Random(11)
    contents = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(80)
    ] + ["the and of", "Fractions, fractions and more fractions!"]
    await owner.executemany(
        "INSERT INTO user_memories (user_id, content, category) VALUES ($1, $2, 'fact')",
        [(user, c) for c in contents],
    )
    db = service_database(owner_url)
    await db.open()
    try:
        with session.acting_as(user):
            yield World(MemoryStore(db), owner, user)
    finally:
        await db.close()
        await owner.close()
        await drop_scratch_database(pg_admin_url, owner_url)


async def _recalled(world: World, query: str) -> dict[int, float]:
    q = RecallQuery(user_id=world.user, weights=RELEVANCE_ONLY, query=query, limit=100)
    scored = await world.store.recall(q, EVERYTHING, log=False)
    return {s.memory.id: s.relevance_score for s in scored if s.relevance_score > 0}


@pytest.mark.parametrize(
    "query",
    ["fractions", "quiet reading group", "safety goggles lab essay", "fraction homework the", "x"],
)
async def test_relevance_is_domain_bm25(world: World, query: str) -> None:
    expected = await bm25_relevance(world.owner, world.user, query)
    got = await _recalled(world, query)
    assert len(expected) <= 100  # every match fits in one recall
    assert got.keys() == expected.keys()
    for memory_id, score in got.items():
        assert score == pytest.approx(expected[memory_id], rel=1e-9)
        assert 0 < score < 1


async def test_the_term_index_follows_stores_updates_and_deletes(world: World) -> None:
    before = await _recalled(world, "projector")
    memory_id = await world.owner.fetchval(
        "INSERT INTO user_memories (user_id, content, category)"
        " VALUES ($1, 'projector projector bulb', 'fact') RETURNING id",
        world.user,
    )
    assert (await _recalled(world, "projector")).keys() == before.keys() | {memory_id}
    expected = await bm25_relevance(world.owner, world.user, "projector")
    assert await _recalled(world, "projector") == pytest.approx(expected)
    await world.owner.execute(
        "UPDATE user_memories SET content = 'whiteboard markers' WHERE id = $1", memory_id
    )
    assert memory_id not in await _recalled(world, "projector")
    assert set(await _recalled(world, "whiteboard")) == {memory_id}
    await world.owner.execute("DELETE FROM user_memories WHERE id = $1", memory_id)
    assert await _recalled(world, "whiteboard") == {}
    assert await _recalled(world, "projector") == pytest.approx(before)
    stats = await world.owner.fetchrow(
        "SELECT docs, total_len FROM memory_user_stats WHERE user_id = $1", world.user
    )
    counted = await world.owner.fetchrow(
        "SELECT count(*) AS docs, sum(faraday_tsvector_length(content_tsv)) AS total_len"
        " FROM user_memories WHERE user_id = $1",
        world.user,
    )
    assert dict(stats) == dict(counted)


async def test_a_multi_row_insert_indexes_every_posting_of_every_user(world: World) -> None:
    """One statement of many memories and users (an import chunk) writes what 0010 defined."""
    other = await world.owner.fetchval(
        "INSERT INTO users (email) VALUES ('bm25-other@example.org') RETURNING id"
    )
    rng = random.Random(12)
    rows = [
        (world.user if n % 3 else other, " ".join(rng.choice(WORDS) for _ in range(1 + n % 12)))
        for n in range(60)
    ]
    before = {
        r["user_id"]: (r["docs"], r["total_len"])
        for r in await world.owner.fetch("SELECT * FROM memory_user_stats")
    }
    ids = await world.owner.fetch(
        "INSERT INTO user_memories (user_id, content, category)"
        " SELECT u, c, 'fact' FROM unnest($1::uuid[], $2::text[]) AS r(u, c) RETURNING id",
        [u for u, _ in rows],
        [c for _, c in rows],
    )
    ids = [r["id"] for r in ids]
    written = await world.owner.fetch(
        "SELECT user_id, lexeme, memory_id, tf, doc_len FROM memory_terms"
        " WHERE memory_id = ANY($1) ORDER BY 1, 2, 3",
        ids,
    )
    expected = await world.owner.fetch(
        "SELECT m.user_id, t.lexeme, m.id AS memory_id,"
        " coalesce(array_length(t.positions, 1), 1) AS tf,"
        " faraday_tsvector_length(m.content_tsv) AS doc_len"
        " FROM user_memories m, unnest(m.content_tsv) t WHERE m.id = ANY($1) ORDER BY 1, 2, 3",
        ids,
    )
    assert [tuple(r) for r in written] == [tuple(r) for r in expected] and written
    for user in (world.user, other):
        stats = await world.owner.fetchrow(
            "SELECT docs, total_len FROM memory_user_stats WHERE user_id = $1", user
        )
        added = await world.owner.fetchrow(
            "SELECT count(*) AS docs, sum(faraday_tsvector_length(content_tsv)) AS total_len"
            " FROM user_memories WHERE id = ANY($1) AND user_id = $2",
            ids,
            user,
        )
        docs, total = before.get(user, (0, 0))
        assert (stats["docs"], stats["total_len"]) == (
            docs + added["docs"],
            total + added["total_len"],
        )
    await world.owner.execute("DELETE FROM user_memories WHERE id = ANY($1)", ids)
    await world.owner.execute("DELETE FROM users WHERE id = $1", other)
