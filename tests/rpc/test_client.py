"""The packaged client against the real server: the calls other services make."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    memory_pb2,
    memory_service_pb2,
)
from faraday_memory_client import MemoryClient, field_violations

from memory_service.server import RunningServer, start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import LossyProxy, register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def auth_calls() -> list[str]:
    return []


@pytest.fixture
async def client(server: RunningServer, auth_calls: list[str]) -> AsyncIterator[MemoryClient]:
    async def auth() -> Sequence[tuple[str, str]]:
        auth_calls.append("called")
        return [("authorization", "Bearer test-token")]

    async with MemoryClient(
        f"127.0.0.1:{server.port}", metadata_provider=auth, default_timeout_seconds=5
    ) as c:
        yield c


async def test_metadata_and_time_filters_through_the_client(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    wanted = await client.store_memory(
        user_id=user, content="Unit 7 quiz", category="fact", metadata={"unit": 7}
    )
    await client.store_memory(user_id=user, content="Unit 8", category="fact", metadata={"unit": 8})
    since = datetime(2020, 1, 1, tzinfo=UTC)
    recalled = await client.recall(
        user,
        metadata_filter={"unit": 7},
        update_time_start=since,
        last_access_time_end=datetime.now(UTC) + timedelta(days=1),
        skip_access_tracking=True,
    )
    assert [s.memory.id for s in recalled] == [wanted.id]
    listed = await client.list_memories(
        user, metadata_filter={"unit": 7}, update_time_start=since, last_access_time_end=since
    )
    assert [m.id for m in listed.memories] == [wanted.id]  # never accessed: before every time
    iterated = [m.id async for m in client.iter_memories(user, metadata_filter={"unit": 8})]
    assert iterated == [
        m.id for m in (await client.list_memories(user)).memories if m.id != wanted.id
    ]
    again = await client.get_memory(wanted.id)
    assert not again.HasField("last_access_time")


async def test_store_recall_feedback_through_the_client(client, admin_stub, auth_calls) -> None:
    user = await register_user(admin_stub)
    memory = await client.store_memory(
        user_id=user,
        content="Prefers visual fraction models",
        category="preference",
        importance=0.7,
        tags=["math"],
        context={"class": "7B"},
    )
    recalled = await client.recall(user, "fractions", limit=5, context={"class": "7B"})
    assert [s.memory.id for s in recalled] == [memory.id]
    response = await client.record_feedback(memory.id, rating=5)
    assert response.memory.importance == pytest.approx(0.7 + 0.2 * 0.3)
    ids = [m.id async for m in client.iter_memories(user, page_size=1)]
    assert ids == [memory.id]
    # The feedback moved importance: the old value is a revision.
    revisions = await client.list_memory_revisions(memory.id, page_size=10)
    assert [(r.version, r.importance) for r in revisions.revisions] == [(1, pytest.approx(0.7))]
    assert revisions.next_page_token == ""
    assert len(auth_calls) == 5  # the metadata hook ran once per call


async def test_client_surfaces_field_violations(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.store_memory(user_id=user, content="", category="fact")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(info.value)] == ["memory.content"]


async def test_lessons_through_the_client(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    lesson = await admin_stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(
                title="Dividing fractions with models",
                user_id=user,
                grade_level="7",
                status=lesson_pb2.LESSON_STATUS_PUBLISHED,
            )
        )
    )
    assert (await client.get_lesson(lesson.id)).title == lesson.title
    listed = await client.list_lessons(user_id=user, week_of_start=date(2000, 1, 1))
    assert list(listed.lessons) == []  # week_of unset: outside any week range
    found = await client.search_lessons("fraction")
    assert [m.lesson.id for m in found.matches] == [lesson.id]


_STORE = "/faraday.memory.v1.MemoryService/StoreMemory"
_FEEDBACK = "/faraday.memory.v1.MemoryService/RecordFeedback"


def _request_ids(proxy: LossyProxy, method: str) -> list[str]:
    """The request_id of every call of `method` the proxy saw, parsed from the raw bytes."""
    raws = proxy.seen.get(method, [])
    if method == _STORE:
        return [memory_service_pb2.StoreMemoryRequest.FromString(raw).request_id for raw in raws]
    return [memory_service_pb2.RecordFeedbackRequest.FromString(raw).request_id for raw in raws]


async def test_a_store_retried_after_a_lost_response_stores_once(
    lossy, admin_stub, memory_stub
) -> None:
    user = await register_user(admin_stub)
    proxy, client = await lossy(_STORE)
    memory = await client.store_memory(user_id=user, content="Likes number lines", category="fact")
    assert memory.content == "Likes number lines"
    request_ids = _request_ids(proxy, _STORE)
    assert len(request_ids) == 2  # the lost attempt and the client's retry
    assert request_ids[0] and request_ids[0] == request_ids[1]
    # gRPC's retry resends the very bytes of the first attempt.
    assert proxy.seen[_STORE][0] == proxy.seen[_STORE][1]
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert [m.id for m in listed.memories] == [memory.id]


async def test_feedback_retried_after_a_lost_response_applies_once(
    client, lossy, admin_stub, memory_stub
) -> None:
    user = await register_user(admin_stub)
    memory = await client.store_memory(
        user_id=user, content="Prefers worked examples", category="preference", importance=0.7
    )
    proxy, lossy_client = await lossy(_FEEDBACK)
    response = await lossy_client.record_feedback(memory.id, rating=5)
    once = pytest.approx(0.7 + 0.2 * 0.3)
    assert response.memory.importance == once
    request_ids = _request_ids(proxy, _FEEDBACK)
    assert len(request_ids) == 2
    assert request_ids[0] and request_ids[0] == request_ids[1]
    stored = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory.id))
    assert stored.importance == once
    interactions = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            memory_id=memory.id, type=memory_pb2.INTERACTION_TYPE_FEEDBACK
        )
    )
    assert [i.id for i in interactions.interactions] == [response.interaction.id]


async def test_a_batch_retried_after_a_lost_response_replays(lossy, admin_stub) -> None:
    user = await register_user(admin_stub)
    method = "/faraday.memory.v1.MemoryService/BatchStoreMemories"
    proxy, client = await lossy(method)
    requests = [
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(user_id=user, content=text, category="fact")
        )
        for text in ("Uses fraction strips", "Teaches 7B on Mondays")
    ]
    response = await client.batch_store_memories(requests)
    # The lost attempt committed; the retry, with the ids the client drew
    # once, is answered from the idempotency keys.
    assert [r.outcome for r in response.results] == [
        memory_service_pb2.STORE_OUTCOME_ALREADY_DONE
    ] * 2
    first, second = proxy.seen[method]
    assert first == second
    ids = [
        r.request_id
        for r in memory_service_pb2.BatchStoreMemoriesRequest.FromString(first).requests
    ]
    assert all(ids) and len(set(ids)) == 2


async def test_one_attempt_disables_the_retries(server, admin_stub) -> None:
    user = await register_user(admin_stub)
    upstream = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    proxy = LossyProxy(upstream, _STORE)
    proxy_server = grpc.aio.server()
    proxy_server.add_generic_rpc_handlers((proxy,))
    port = proxy_server.add_insecure_port("127.0.0.1:0")
    await proxy_server.start()
    try:
        async with MemoryClient(
            f"127.0.0.1:{port}",
            metadata_provider=lambda: [("authorization", "Bearer test-token")],
            max_attempts=1,
        ) as client:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.store_memory(user_id=user, content="x", category="fact")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(proxy.seen[_STORE]) == 1
    finally:
        await proxy_server.stop(None)
        await upstream.close(None)


async def test_an_empty_request_id_is_not_retried(lossy, admin_stub, memory_stub) -> None:
    user = await register_user(admin_stub)
    proxy, client = await lossy(_STORE)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.store_memory(user_id=user, content="x", category="fact", request_id="")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _request_ids(proxy, _STORE) == [""]  # one attempt, no key
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert len(listed.memories) == 1  # the lost attempt did store


async def test_an_explicit_request_id_replays_and_rejects_reuse(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    first = await client.store_memory(
        user_id=user, content="Uses fraction bars", category="fact", request_id="import-42"
    )
    again = await client.store_memory(
        user_id=user, content="Uses fraction bars", category="fact", request_id="import-42"
    )
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.store_memory(
            user_id=user, content="Something else", category="fact", request_id="import-42"
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(info.value)] == ["request_id"]


async def test_semantic_recall_through_the_client(app_url, admin_stub, has_pgvector) -> None:
    """Caller-made vectors in and a semantic weight: recall ranks by cosine."""
    model = "caller-test-3d"
    settings = TEST_SETTINGS.with_overrides(embedding_model=model, embedding_dimension=3)
    running = await start(settings, app_url)
    try:
        async with MemoryClient(f"127.0.0.1:{running.port}") as client:
            user = await register_user(admin_stub)

            async def store(content: str, vector: list[float]) -> memory_pb2.Memory:
                return await client.store_memory(
                    user_id=user,
                    content=content,
                    category="fact",
                    embedding=vector,
                    embedding_model=model,
                )

            def recall() -> Awaitable[list[memory_service_pb2.ScoredMemory]]:
                return client.recall(
                    user,
                    query_embedding=[1.0, 0.0, 0.0],
                    embedding_model=model,
                    importance_weight=0,
                    recency_weight=0,
                    semantic_weight=1,
                )

            if not has_pgvector:  # the server cannot keep or rank by vectors
                for call in (store("near", [1.0, 0.1, 0.0]), recall()):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                return
            near = await store("near", [1.0, 0.1, 0.0])
            far = await store("far", [0.0, 1.0, 0.0])
            recalled = await recall()
            assert [s.memory.id for s in recalled] == [near.id, far.id]
            assert recalled[0].semantic_score > 0.9 and recalled[1].semantic_score == 0.0
    finally:
        await running.stop(0.5)


async def test_dedup_policy_and_batch_store(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    first = await client.store_memory(user_id=user, content="Plays cello", category="fact")
    merged = await client.store_memory(user_id=user, content="plays CELLO", category="fact")
    twice = await client.store_memory(
        user_id=user,
        content="plays cello",
        category="fact",
        dedup_policy=memory_service_pb2.DEDUP_POLICY_NONE,
    )
    assert merged.id == first.id and twice.id != first.id
    request = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(user_id=user, content="Sings alto", category="fact")
    )
    response = await client.batch_store_memories([request, request])
    assert [r.outcome for r in response.results] == [
        memory_service_pb2.STORE_OUTCOME_CREATED,
        memory_service_pb2.STORE_OUTCOME_DEDUPLICATED,
    ]
    assert request.request_id == ""  # the caller's message is left alone
