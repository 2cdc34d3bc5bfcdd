"""Recall of a user with more memories than the preselection takes: always the exact top N.

The no-query recall scores only the most important and the most recently
changed memories when a bound proves that is enough (storage/memories.py),
and falls back to scoring all of them when it is not. Both paths are
checked against a brute-force ranking with domain.ranking.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from faraday.memory.v1 import memory_service_pb2
from google.protobuf import duration_pb2

from memory_service.domain import ranking
from memory_service.domain.models import Weights
from memory_service.storage.memories import PRESELECT_PER_LIST
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _insert(
    database_url: str, user: str, rows: list[tuple[float, float]]
) -> list[asyncpg.Record]:
    """Memories of (importance, age in days), written directly for speed."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "INSERT INTO user_memories (user_id, content, category, importance, created_at,"
            " updated_at) VALUES ($1, $2, 'fact', $3, now() - make_interval(days => $4),"
            " now() - make_interval(days => $4))",
            [
                (uuid.UUID(user), f"memory {n}", importance, age)
                for n, (importance, age) in enumerate(rows)
            ],
        )
        stored = await conn.fetch(
            "SELECT id, importance, updated_at, created_at FROM user_memories WHERE user_id = $1",
            uuid.UUID(user),
        )
    finally:
        await conn.close()
    return stored


def _brute_force(stored, weights: Weights, limit: int) -> list[int]:
    now = datetime.now(UTC)
    scored = [
        (
            sum(ranking.score_parts(r["importance"], now - r["updated_at"], 0.0, weights)),
            r["created_at"],
            r["id"],
        )
        for r in stored
    ]
    scored.sort(reverse=True)
    return [ident for _, _, ident in scored[:limit]]


def _request(user: str, weights: Weights, limit: int) -> memory_service_pb2.RecallMemoriesRequest:
    half_life = duration_pb2.Duration()
    half_life.FromTimedelta(weights.half_life)
    return memory_service_pb2.RecallMemoriesRequest(
        user_id=user,
        limit=limit,
        weights=memory_service_pb2.RecallWeights(
            importance=weights.importance,
            recency=weights.recency,
            recency_half_life=half_life,
        ),
    )


@pytest.mark.parametrize(
    "weights",
    [
        ranking.DEFAULT_WEIGHTS,
        Weights(1.0, 0.0, 1.0, timedelta(days=30)),
        Weights(0.0, 1.0, 1.0, timedelta(days=30)),
        Weights(1.0, 3.0, 1.0, timedelta(days=7)),
    ],
)
async def test_preselected_recall_matches_a_full_ranking(
    memory_stub, admin_stub, database_url, weights
) -> None:
    user = await register_user(admin_stub)
    rnd = random.Random(7)
    stored = await _insert(
        database_url,
        user,
        [(round(rnd.random(), 3), rnd.uniform(0, 400)) for _ in range(PRESELECT_PER_LIST * 3)],
    )
    for limit in (1, 10, 100):
        got = await memory_stub.RecallMemories(_request(user, weights, limit))
        assert [s.memory.id for s in got.memories] == _brute_force(stored, weights, limit)


async def test_recall_falls_back_to_a_full_scan_when_the_bound_fails(
    memory_stub, admin_stub, database_url
) -> None:
    # Neither list alone holds the winners: old-but-important memories fill
    # the importance list, new-but-trivial ones the recency list, and the
    # best (important enough and recent enough) are in neither.
    user = await register_user(admin_stub)
    rows = [(1.0, 1000.0)] * 150 + [(0.0, 0.001)] * 150 + [(0.9, 1.0)] * 20
    stored = await _insert(database_url, user, rows)
    got = await memory_stub.RecallMemories(_request(user, ranking.DEFAULT_WEIGHTS, 10))
    winners = {r["id"] for r in stored if r["importance"] == 0.9}
    assert {s.memory.id for s in got.memories} <= winners
    assert [s.memory.id for s in got.memories] == _brute_force(stored, ranking.DEFAULT_WEIGHTS, 10)
