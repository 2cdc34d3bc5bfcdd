"""Dedup of StoreMemory and BatchStoreMemories over real gRPC (memory_service.proto DedupPolicy).

Exact dedup, the merge rules, the `merge` interaction and revision, the
faraday-store-outcome header, request_id replays, races of concurrent
stores of one fact, semantic dedup (with pgvector; FAILED_PRECONDITION
without), and BatchStoreMemories' per-item results.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)

from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import error_reasons, field_violations, register_user, set_user_active

pytestmark = pytest.mark.asyncio(loop_scope="session")

POLICY = memory_service_pb2
OUTCOME = memory_service_pb2
CALLER_MODEL = "caller-test-3d"


def _request(
    user: str, content: str, policy: int = POLICY.DEDUP_POLICY_UNSPECIFIED, **fields: Any
) -> memory_service_pb2.StoreMemoryRequest:
    request_id = fields.pop("request_id", "")
    minimum = fields.pop("min_similarity", None)
    vector = fields.pop("vector", None)
    metadata = fields.pop("metadata", None)
    memory = memory_pb2.Memory(user_id=user, content=content, category="fact", **fields)
    if metadata:
        memory.metadata.update(metadata)
    if vector is not None:
        memory.embedding.extend(vector)
        memory.embedding_model = CALLER_MODEL
    request = memory_service_pb2.StoreMemoryRequest(
        memory=memory, request_id=request_id, dedup_policy=policy
    )
    if minimum is not None:
        request.dedup_min_similarity = minimum
    return request


async def _store(
    stub: memory_service_pb2_grpc.MemoryServiceStub, request: memory_service_pb2.StoreMemoryRequest
) -> tuple[memory_pb2.Memory, str]:
    """The stored memory and the call's faraday-store-outcome header."""
    call = stub.StoreMemory(request)
    memory = await call
    headers = dict(await call.initial_metadata())
    return memory, headers["faraday-store-outcome"]


async def _count(url: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def _memories_of(url: str, user: str) -> int:
    return await _count(
        url, "SELECT count(*) FROM user_memories WHERE user_id = $1", uuid.UUID(user)
    )


async def _merges(stub: memory_service_pb2_grpc.MemoryServiceStub, memory_id: int) -> list[Any]:
    page = await stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            memory_id=memory_id, type=memory_pb2.INTERACTION_TYPE_MERGE, page_size=100
        )
    )
    return list(page.interactions)


async def _profile(admin_stub: Any, name: str) -> int:
    profile = await admin_stub.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name=name, model_version="v1")
        )
    )
    return int(profile.id)


async def test_exact_variants_merge_and_say_so(memory_stub, admin_stub, database_url) -> None:
    user = await register_user(admin_stub)
    first, outcome = await _store(memory_stub, _request(user, "Teaches Year 7 maths."))
    assert outcome == "created"
    for variant in (
        "teaches year 7 MATHS.",
        "  Teaches\tYear 7\n maths.  ",
        "\uff34eaches Year \uff17 maths.",  # fullwidth T and 7: NFKC makes them T and 7
    ):
        again, outcome = await _store(memory_stub, _request(user, variant))
        assert (again.id, outcome) == (first.id, "deduplicated"), variant
        assert again.content == "Teaches Year 7 maths."  # the existing memory keeps its words
    assert await _memories_of(database_url, user) == 1
    merges = await _merges(memory_stub, first.id)
    assert len(merges) == 3
    assert {tuple(sorted(dict(m.context).items())) for m in merges} == {
        (("policy", "exact"), ("via", "store"))
    }
    # Different words are a different memory; so is an explicit EXACT of them.
    other, outcome = await _store(memory_stub, _request(user, "Teaches Year 8 maths.", 2))
    assert outcome == "created" and other.id != first.id


async def test_none_stores_twice_and_scopes_do_not_merge(
    memory_stub, admin_stub, database_url
) -> None:
    user, someone = await register_user(admin_stub), await register_user(admin_stub)
    profile = await _profile(admin_stub, f"dedup-{uuid.uuid4().hex[:8]}")
    shared, _ = await _store(memory_stub, _request(user, "Likes quiet rooms."))
    twice, outcome = await _store(
        memory_stub, _request(user, "Likes quiet rooms.", POLICY.DEDUP_POLICY_NONE)
    )
    assert outcome == "created" and twice.id != shared.id
    # Another assistant profile, another user: not the same place.
    mine, outcome = await _store(
        memory_stub, _request(user, "Likes quiet rooms.", assistant_profile_id=profile)
    )
    assert outcome == "created" and mine.id not in (shared.id, twice.id)
    _, outcome = await _store(memory_stub, _request(someone, "Likes quiet rooms."))
    assert outcome == "created"
    # With two exact copies stored (NONE), a dedup store merges into the oldest.
    again, outcome = await _store(memory_stub, _request(user, "likes quiet rooms."))
    assert (again.id, outcome) == (shared.id, "deduplicated")
    again, outcome = await _store(
        memory_stub, _request(user, "LIKES QUIET ROOMS.", assistant_profile_id=profile)
    )
    assert (again.id, outcome) == (mine.id, "deduplicated")
    assert await _memories_of(database_url, user) == 3


async def test_an_expired_memory_is_no_duplicate(memory_stub, admin_stub, database_url) -> None:
    user = await register_user(admin_stub)
    first, _ = await _store(memory_stub, _request(user, "Room 12 on Fridays."))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE user_memories SET expires_at = now() - interval '1 minute' WHERE id = $1",
            first.id,
        )
    finally:
        await conn.close()
    second, outcome = await _store(memory_stub, _request(user, "Room 12 on Fridays."))
    assert outcome == "created" and second.id != first.id


async def test_merge_rules_and_revision(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    soon = datetime.now(UTC) + timedelta(days=2)
    later = datetime.now(UTC) + timedelta(days=9)
    first_request = _request(
        user, "Uses number lines.", importance=0.4, tags=["maths", "y7"], confidence=0.6,
        metadata={"from": "chat", "n": 1},
    )  # fmt: skip
    first_request.memory.expire_time.FromDatetime(soon)
    first, _ = await _store(memory_stub, first_request)
    second_request = _request(
        user, "uses number lines.", importance=0.9, tags=["y7", "visual", "maths"],
        confidence=0.3, metadata={"from": "import", "extra": True},
    )  # fmt: skip
    second_request.memory.expire_time.FromDatetime(later)
    merged, outcome = await _store(memory_stub, second_request)
    assert outcome == "deduplicated" and merged.id == first.id
    assert list(merged.tags) == ["maths", "y7", "visual"]
    assert merged.importance == pytest.approx(0.9)
    assert merged.confidence == pytest.approx(0.6)
    assert abs(merged.expire_time.ToDatetime(UTC) - later) < timedelta(milliseconds=1)
    assert dict(merged.metadata) == {"from": "chat", "n": 1, "extra": True}
    assert merged.version == first.version + 1
    # Unset expiry (never) is the latest; a lower importance changes nothing of it.
    forever, _ = await _store(memory_stub, _request(user, "USES NUMBER LINES.", importance=0.1))
    assert not forever.HasField("expire_time") and forever.importance == pytest.approx(0.9)
    revisions = await memory_stub.ListMemoryRevisions(
        memory_service_pb2.ListMemoryRevisionsRequest(memory_id=first.id)
    )
    # Each merge changed values, so each kept the values it replaced.
    assert [r.version for r in revisions.revisions] == [2, 1]
    assert list(revisions.revisions[-1].tags) == ["maths", "y7"]
    # Tags stop at the 32-tag limit.
    many = _request(user, "uses number lines.", tags=[f"t{i}" for i in range(32)])
    capped, _ = await _store(memory_stub, many)
    assert len(capped.tags) == 32 and list(capped.tags[:3]) == ["maths", "y7", "visual"]


async def test_a_retried_dedup_store_replays_without_merging_again(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    first, _ = await _store(memory_stub, _request(user, "Marks in green ink."))
    retry = _request(user, "marks in green ink.", request_id="r-" + uuid.uuid4().hex, tags=["x"])
    merged, outcome = await _store(memory_stub, retry)
    assert (merged.id, outcome) == (first.id, "deduplicated")
    again, outcome = await _store(memory_stub, retry)
    assert (again.id, outcome, again.version) == (first.id, "replayed", merged.version)
    assert len(await _merges(memory_stub, first.id)) == 1
    # A created one replays too, even though it would now be a duplicate of itself.
    created_request = _request(user, "Lunch duty on Tuesdays.", request_id="c-" + uuid.uuid4().hex)
    created, outcome = await _store(memory_stub, created_request)
    assert outcome == "created"
    replay, outcome = await _store(memory_stub, created_request)
    assert (replay.id, outcome) == (created.id, "replayed")
    assert await _merges(memory_stub, created.id) == []


async def test_an_inactive_user_gets_no_merge(memory_stub, admin_stub) -> None:
    email = f"{uuid.uuid4().hex[:10]}@school.example.org"
    user = await register_user(admin_stub, email)
    first, _ = await _store(memory_stub, _request(user, "Coaches the chess club."))
    await set_user_active(admin_stub, user, email, False)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _store(memory_stub, _request(user, "coaches the chess club.", request_id="i-1"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "USER_INACTIVE" in error_reasons(info.value)
    assert await _merges(memory_stub, first.id) == []
    await set_user_active(admin_stub, user, email, True)
    # The request_id was not used up.
    merged, outcome = await _store(
        memory_stub, _request(user, "coaches the chess club.", request_id="i-1")
    )
    assert (merged.id, outcome) == (first.id, "deduplicated")


async def test_twenty_racing_stores_of_one_fact_end_as_one_memory(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    variants = [
        "Prefers printed worksheets.",
        "prefers printed worksheets.",
        "PREFERS PRINTED WORKSHEETS.",
    ]
    requests = [_request(user, variants[i % 3], tags=[f"t{i}"]) for i in range(20)]
    results = await asyncio.gather(*(_store(memory_stub, r) for r in requests))
    assert len({m.id for m, _ in results}) == 1
    outcomes = sorted(o for _, o in results)
    assert outcomes == ["created"] + ["deduplicated"] * 19
    assert await _memories_of(database_url, user) == 1
    memory_id = results[0][0].id
    assert len(await _merges(memory_stub, memory_id)) == 19
    final = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory_id))
    assert sorted(final.tags) == sorted(f"t{i}" for i in range(20))
    assert final.version == 20


async def test_two_racing_case_variants_and_a_batch_end_as_one_memory(
    memory_stub, admin_stub, database_url
) -> None:
    for _ in range(5):
        user = await register_user(admin_stub)
        batch = memory_service_pb2.BatchStoreMemoriesRequest(
            requests=[_request(user, "Walks to school."), _request(user, "walks TO school.")]
        )
        results = await asyncio.gather(
            _store(memory_stub, _request(user, "Walks to school.")),
            _store(memory_stub, _request(user, "WALKS TO SCHOOL.")),
            memory_stub.BatchStoreMemories(batch),
        )
        assert await _memories_of(database_url, user) == 1
        assert results[0][0].id == results[1][0].id == results[2].results[0].memory.id


async def test_outcome_header_passes_the_auth_interceptor(admin_stub, app_url: str) -> None:
    """With authentication on, the header still arrives (the interceptor wraps the handler)."""
    import hashlib
    import json
    import tempfile
    from pathlib import Path

    token = "dedup-test-token-" + uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp:
        tokens = Path(tmp) / "tokens.json"
        tokens.write_text(
            json.dumps(
                {
                    "tokens": [
                        {
                            "name": "backend",
                            "sha256": hashlib.sha256(token.encode()).hexdigest(),
                            "scopes": ["memories:read", "memories:write"],
                        }
                    ]
                }
            )
        )
        running = await start(TEST_SETTINGS.with_overrides(service_tokens_file=tokens), app_url)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
                stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
                user = await register_user(admin_stub)
                auth = (("authorization", f"Bearer {token}"),)
                outcomes = []
                for content in ("Runs the choir.", "runs the choir."):
                    call = stub.StoreMemory(_request(user, content), metadata=auth)
                    await call
                    outcomes.append(dict(await call.initial_metadata())["faraday-store-outcome"])
        finally:
            await running.stop(0.5)
    assert outcomes == ["created", "deduplicated"]


async def test_dedup_min_similarity_is_checked(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    exact, semantic = POLICY.DEDUP_POLICY_EXACT, POLICY.DEDUP_POLICY_SEMANTIC
    minimum = "dedup_min_similarity"
    cases = [
        (_request(user, "x", exact, min_similarity=0.9), minimum),
        (_request(user, "x", semantic, min_similarity=0.4), minimum),
        (_request(user, "x", semantic, min_similarity=float("nan")), minimum),
        (_request(user, "x", 99), "dedup_policy"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await memory_stub.StoreMemory(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(info.value) == [field]


@pytest.fixture(scope="session")
async def has_pgvector(database_url: str) -> bool:
    return bool(
        await _count(database_url, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'")
    )


@pytest.fixture
async def caller_vectors(app_url: str) -> AsyncIterator[memory_service_pb2_grpc.MemoryServiceStub]:
    """A server whose callers send 3-dimensional vectors of CALLER_MODEL."""
    settings = TEST_SETTINGS.with_overrides(embedding_model=CALLER_MODEL, embedding_dimension=3)
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            yield memory_service_pb2_grpc.MemoryServiceStub(ch)
    finally:
        await running.stop(0.5)


async def test_semantic_dedup_merges_the_nearest_above_the_threshold(
    caller_vectors, admin_stub, has_pgvector
) -> None:
    if not has_pgvector:
        pytest.skip("this PostgreSQL has no pgvector: semantic dedup is FAILED_PRECONDITION there")
    stub, user = caller_vectors, await register_user(admin_stub)
    semantic = POLICY.DEDUP_POLICY_SEMANTIC
    near, _ = await _store(stub, _request(user, "Has 28 pupils.", vector=[1.0, 0.0, 0.0]))
    far, _ = await _store(stub, _request(user, "Likes jazz.", vector=[0.0, 1.0, 0.0]))
    # cos = 0.995 to `near`: above the default 0.95.
    merged, outcome = await _store(
        stub, _request(user, "Has 29 pupils.", semantic, vector=[1.0, 0.1, 0.0])
    )
    assert (merged.id, outcome) == (near.id, "deduplicated")
    (merge,) = await _merges(stub, near.id)
    assert merge.context["policy"] == "semantic" and merge.context["via"] == "store"
    assert merge.context["similarity"] == pytest.approx(0.995, abs=1e-3)
    # Below a stricter threshold: a new memory. EXACT does not look at vectors.
    strict, outcome = await _store(
        stub,
        _request(user, "Has 30 pupils.", semantic, min_similarity=0.999, vector=[1.0, 0.1, 0.0]),
    )
    assert outcome == "created" and strict.id not in (near.id, far.id)
    _, outcome = await _store(stub, _request(user, "Has 31 pupils.", vector=[1.0, 0.0, 0.0]))
    assert outcome == "created"
    # Semantic looks for an exact match first (no similarity in the context then).
    again, outcome = await _store(
        stub, _request(user, "likes JAZZ.", semantic, vector=[0.0, 0.0, 1.0])
    )
    assert (again.id, outcome) == (far.id, "deduplicated")
    (merge,) = await _merges(stub, far.id)
    assert dict(merge.context) == {"policy": "exact", "via": "store"}


async def test_semantic_dedup_needs_vectors(
    memory_stub, caller_vectors, admin_stub, has_pgvector
) -> None:
    user = await register_user(admin_stub)
    semantic = POLICY.DEDUP_POLICY_SEMANTIC
    # The default test server has no embedding model: nothing to compare with.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await memory_stub.StoreMemory(_request(user, "x", semantic))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "VECTORS_UNAVAILABLE" in error_reasons(info.value)
    # A caller-vector server without pgvector cannot either, vector or not.
    if has_pgvector:
        pytest.skip("this PostgreSQL has pgvector: the no-vector path runs on one without")
    for vector in (None, [1.0, 0.0, 0.0]):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await caller_vectors.StoreMemory(_request(user, "x", semantic, vector=vector))
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_batch_store_reports_each_item(memory_stub, admin_stub, database_url) -> None:
    email = f"{uuid.uuid4().hex[:10]}@school.example.org"
    user, inactive = await register_user(admin_stub), await register_user(admin_stub, email)
    await set_user_active(admin_stub, inactive, email, False)
    existing, _ = await _store(memory_stub, _request(user, "Teaches art."))
    key = "b-" + uuid.uuid4().hex
    requests = [
        _request(user, "Teaches music.", request_id=key),  # 0 created
        _request(user, "teaches ART."),  # 1 merged into an existing memory
        _request(user, "TEACHES MUSIC."),  # 2 merged into item 0
        _request(user, ""),  # 3 invalid
        _request(str(uuid.uuid4()), "Unknown user."),  # 4 not found
        _request(inactive, "Inactive."),  # 5 inactive
        _request(user, "Teaches music.", POLICY.DEDUP_POLICY_NONE),  # 6 created, no dedup
        _request(user, "y", POLICY.DEDUP_POLICY_NONE, min_similarity=0.9),  # 7 invalid
        _request(user, "z", assistant_profile_id=987654),  # 8 unknown profile
    ]
    response = await memory_stub.BatchStoreMemories(
        memory_service_pb2.BatchStoreMemoriesRequest(requests=requests)
    )
    results = list(response.results)
    assert [r.outcome for r in results] == [
        OUTCOME.STORE_OUTCOME_CREATED,
        OUTCOME.STORE_OUTCOME_DEDUPLICATED,
        OUTCOME.STORE_OUTCOME_DEDUPLICATED,
        OUTCOME.STORE_OUTCOME_REJECTED,
        OUTCOME.STORE_OUTCOME_REJECTED,
        OUTCOME.STORE_OUTCOME_REJECTED,
        OUTCOME.STORE_OUTCOME_CREATED,
        OUTCOME.STORE_OUTCOME_REJECTED,
        OUTCOME.STORE_OUTCOME_REJECTED,
    ]
    assert results[1].memory.id == existing.id
    assert results[2].memory.id == results[0].memory.id
    assert results[6].memory.id != results[0].memory.id
    invalid = results[3].error
    assert invalid.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [v.field for v in invalid.field_violations] == ["memory.content"]
    assert (results[4].error.code, results[4].error.reason) == (5, "USER_NOT_FOUND")
    assert (results[5].error.code, results[5].error.reason) == (9, "USER_INACTIVE")
    assert [v.field for v in results[7].error.field_violations] == ["dedup_min_similarity"]
    assert results[8].error.code == 5
    assert not results[0].HasField("error") and not results[3].HasField("memory")
    assert await _memories_of(database_url, user) == 3
    assert await _memories_of(database_url, inactive) == 0
    merges = await _merges(memory_stub, existing.id)
    assert [dict(m.context) for m in merges] == [{"policy": "exact", "via": "batch"}]
    # A retried batch: the keyed item is ALREADY_DONE, unkeyed ones merge again.
    retry = await memory_stub.BatchStoreMemories(
        memory_service_pb2.BatchStoreMemoriesRequest(requests=requests[:1])
    )
    assert retry.results[0].outcome == OUTCOME.STORE_OUTCOME_ALREADY_DONE
    assert retry.results[0].memory.id == results[0].memory.id
    # The same request_id through StoreMemory is the same request.
    _, outcome = await _store(memory_stub, requests[0])
    assert outcome == "replayed"


async def test_batch_store_call_errors(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    calls = [
        [],
        [_request(user, f"m{i}") for i in range(101)],
        [_request(user, "a", request_id="same"), _request(user, "b", request_id="same")],
    ]
    for requests in calls:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await memory_stub.BatchStoreMemories(
                memory_service_pb2.BatchStoreMemoriesRequest(requests=requests)
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(info.value) == ["requests"]
    full = await memory_stub.BatchStoreMemories(
        memory_service_pb2.BatchStoreMemoriesRequest(
            requests=[_request(user, f"m{i}") for i in range(100)]
        )
    )
    assert {r.outcome for r in full.results} == {OUTCOME.STORE_OUTCOME_CREATED}
