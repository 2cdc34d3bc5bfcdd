"""RecallMemories: ranking order on known data, filters, expiry, logging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import admin_service_pb2, memory_pb2, memory_service_pb2, registry_pb2
from google.protobuf import duration_pb2

from memory_service.domain import ranking
from tests.rpc.helpers import field_violations, register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _recall(stub, user: str, **fields) -> list[memory_service_pb2.ScoredMemory]:
    response = await stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, **fields)
    )
    return list(response.memories)


async def _age(database_url: str, memory_id: int, days: float) -> None:
    """Make a memory look `days` old (as if stored and last changed back then)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE user_memories SET created_at = now() - make_interval(secs => $2),"
            " updated_at = now() - make_interval(secs => $2) WHERE id = $1",
            memory_id,
            days * 86400,
        )
    finally:
        await conn.close()


async def test_without_query_importance_orders_memories_of_equal_age(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    low = await store(memory_stub, user, "low", importance=0.2)
    high = await store(memory_stub, user, "high", importance=0.9)
    mid = await store(memory_stub, user, "mid", importance=0.5)
    other = await register_user(admin_stub)
    await store(memory_stub, other, "not mine", importance=1.0)
    got = await _recall(memory_stub, user)
    assert [s.memory.id for s in got] == [high.id, mid.id, low.id]
    assert all(s.relevance_score == 0 for s in got)


async def test_recency_decays_by_half_life_and_scores_match_the_formula(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    old = await store(memory_stub, user, "old but important", importance=0.8)
    new = await store(memory_stub, user, "new and minor", importance=0.5)
    await _age(database_url, old.id, 60)  # two default half-lives
    got = await _recall(memory_stub, user)
    # old: 0.8 + 0.5 * 0.25 = 0.925; new: 0.5 + 0.5 * ~1 = ~1.0
    assert [s.memory.id for s in got] == [new.id, old.id]
    weights = ranking.DEFAULT_WEIGHTS
    for s in got:
        age = datetime.now(UTC) - s.memory.update_time.ToDatetime(tzinfo=UTC)
        parts = ranking.score_parts(s.memory.importance, age, 0.0, weights)
        assert s.importance_score == pytest.approx(parts[0])
        assert s.recency_score == pytest.approx(parts[1], abs=1e-3)
        assert s.score == pytest.approx(sum(parts), abs=1e-3)
    # Per-request weights: importance only puts the old memory first.
    only_importance = await _recall(
        memory_stub, user, weights=memory_service_pb2.RecallWeights(importance=1.0, recency=0.0)
    )
    assert [s.memory.id for s in only_importance] == [old.id, new.id]
    # A one-year half-life makes 60 days cost little recency: old wins again.
    long = duration_pb2.Duration()
    long.FromTimedelta(timedelta(days=365))
    slow = await _recall(
        memory_stub, user, weights=memory_service_pb2.RecallWeights(recency_half_life=long)
    )
    assert [s.memory.id for s in slow] == [old.id, new.id]
    # The shortest half-life on a year-old memory: 525,600 half-lives, which
    # PostgreSQL's power() answered with an "underflow" error (INTERNAL).
    await _age(database_url, old.id, 365)
    short = duration_pb2.Duration()
    short.FromTimedelta(ranking.MIN_HALF_LIFE)
    fast = await _recall(
        memory_stub, user, weights=memory_service_pb2.RecallWeights(recency_half_life=short)
    )
    assert [s.memory.id for s in fast] == [new.id, old.id]
    assert 0 <= fast[1].recency_score < 1e-300


async def test_query_ranks_matches_first_then_the_best_of_the_rest(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    both = await store(memory_stub, user, "Students struggle with dividing fractions in 7B.")
    one = await store(memory_stub, user, "Fraction tiles are in the cupboard.")
    none = await store(memory_stub, user, "Prefers a friendly tone.", importance=1.0)
    got = await _recall(memory_stub, user, query="dividing fractions")
    # Stemmed (fractions ~ fraction); the memory matching both words first, and
    # the one matching neither after the matches, although more important.
    assert [s.memory.id for s in got] == [both.id, one.id, none.id]
    assert got[0].relevance_score > got[1].relevance_score > got[2].relevance_score == 0
    assert 0 < got[0].relevance_score < 1
    # A query of stop words only, or one nothing matches, ranks by the other signals.
    for query in ("the and of", "photosynthesis"):
        ranked = await _recall(memory_stub, user, query=query)
        assert [s.memory.id for s in ranked] == [none.id, one.id, both.id]
    # Punctuation and operators in the text are words, not syntax.
    assert await _recall(memory_stub, user, query="fractions' & | ! (") != []


async def test_filters(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    profile = await admin_stub.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name="Planner", model_version="m-1")
        )
    )
    a = await store(
        memory_stub,
        user,
        "a",
        category="fact",
        tags=["x", "y"],
        context={"class": "7B", "period": 3},
        importance=0.9,
    )
    b = await store(
        memory_stub,
        user,
        "b",
        category="preference",
        tags=["x"],
        importance=0.4,
        assistant_profile_id=profile.id,
    )
    c = await store(memory_stub, user, "c", category="fact", tags=["z"], importance=0.6)

    async def ids(**fields) -> list[int]:
        return [s.memory.id for s in await _recall(memory_stub, user, **fields)]

    assert await ids(categories=["fact"]) == [a.id, c.id]
    assert await ids(tags=["x", "z"]) == [a.id, c.id, b.id]
    assert await ids(tags=["x", "y"], tag_match=memory_service_pb2.TAG_MATCH_ALL) == [a.id]
    context = memory_service_pb2.RecallMemoriesRequest().context
    context.update({"class": "7B"})
    assert await ids(context=context) == [a.id]
    assert await ids(min_importance=0.5) == [a.id, c.id]
    assert await ids(limit=1) == [a.id]
    # A profile sees its own memories and the shared ones.
    assert set(await ids(assistant_profile_id=profile.id)) == {a.id, b.id, c.id}
    future = memory_service_pb2.RecallMemoriesRequest().create_time_start
    future.FromDatetime(datetime.now(UTC) + timedelta(minutes=5))
    assert await ids(create_time_start=future) == []


async def test_expired_memories_are_never_recalled(memory_stub, admin_stub, database_url) -> None:
    user = await register_user(admin_stub)
    gone = await store(memory_stub, user, "expired fact", importance=1.0)
    kept = await store(memory_stub, user, "current fact")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE user_memories SET expires_at = now() - interval '1 minute' WHERE id = $1",
            gone.id,
        )
    finally:
        await conn.close()
    assert [s.memory.id for s in await _recall(memory_stub, user)] == [kept.id]
    assert [s.memory.id for s in await _recall(memory_stub, user, query="fact")] == [kept.id]


async def test_recall_logs_one_interaction_per_memory_and_bumps_last_access(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    first = await store(memory_stub, user, "lesson timing preference", importance=0.9)
    second = await store(memory_stub, user, "lesson format preference", importance=0.3)
    got = await _recall(memory_stub, user, query="lesson")
    assert [s.memory.id for s in got] == [first.id, second.id]
    logged = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            user_id=user, type=memory_pb2.INTERACTION_TYPE_RECALL
        )
    )
    by_memory = {i.memory_id: i for i in logged.interactions}
    assert len(logged.interactions) == 2
    assert by_memory[first.id].context["rank"] == 1 and by_memory[second.id].context["rank"] == 2
    assert by_memory[first.id].context["query"] == "lesson"
    assert by_memory[first.id].context["score"] == pytest.approx(got[0].score)
    after = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=first.id))
    assert after.HasField("last_access_time")
    # The bump is not a change: version, etag and update_time stay.
    assert after.version == first.version and after.update_time == first.update_time


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"limit": 501}, "limit"),
        ({"limit": -1}, "limit"),
        ({"query": "q" * 1001}, "query"),
        ({"min_importance": 1.5}, "min_importance"),
        ({"weights": memory_service_pb2.RecallWeights(importance=-1)}, "weights.importance"),
        (
            {
                "weights": memory_service_pb2.RecallWeights(
                    importance=0, recency=0, relevance=0, semantic=0
                )
            },
            "weights",
        ),
        # Relevance without a query, semantic without vectors: nothing to rank by.
        (
            {"weights": memory_service_pb2.RecallWeights(importance=0, recency=0)},
            "weights",
        ),
        ({"categories": ["c"] * 51}, "categories"),
    ],
)
async def test_bad_recall_requests(memory_stub, admin_stub, fields, field) -> None:
    user = await register_user(admin_stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _recall(memory_stub, user, **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(info.value)
