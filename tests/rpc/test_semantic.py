"""Semantic recall: caller-sent and server-made embeddings, hybrid ranking, no pgvector.

On a PostgreSQL with pgvector (the embedded 18) the vector tests run and
the no-vector ones skip; on one without (the machine's 15, which CI also
runs) it is the other way round. Either skip says why.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest
from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from google.protobuf import field_mask_pb2

from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import field_violations, register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

CALLER_MODEL = "caller-test-3d"
SIGNAL = memory_service_pb2.RecallSignal


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


def _memory(user: str, content: str, vector: list[float] | None = None) -> memory_pb2.Memory:
    memory = memory_pb2.Memory(user_id=user, content=content, category="fact", importance=0.5)
    if vector is not None:
        memory.embedding.extend(vector)
        memory.embedding_model = CALLER_MODEL
    return memory


def _recall(
    user: str, vector: list[float] | None, **weights: float
) -> memory_service_pb2.RecallMemoriesRequest:
    request = memory_service_pb2.RecallMemoriesRequest(
        user_id=user, weights=memory_service_pb2.RecallWeights(**weights)
    )
    if vector is not None:
        request.query_embedding.extend(vector)
        request.embedding_model = CALLER_MODEL
    return request


async def _code(call) -> tuple[grpc.StatusCode, list[str]]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        fields = field_violations(error) if error.code() == grpc.StatusCode.INVALID_ARGUMENT else []
        return error.code(), fields
    return grpc.StatusCode.OK, []


async def test_caller_vectors_rank_by_cosine(caller_vectors, admin_stub, has_pgvector) -> None:
    if not has_pgvector:
        pytest.skip("this PostgreSQL has no pgvector: see the no-vector test instead")
    stub = caller_vectors
    user = await register_user(admin_stub)
    near = await stub.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=_memory(user, "alpha", [1.0, 0.1, 0.0]))
    )
    far = await stub.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=_memory(user, "beta", [0.0, 1.0, 0.0]))
    )
    opposite = await stub.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=_memory(user, "gamma", [-1.0, 0.0, 0.0]))
    )
    plain = await stub.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=_memory(user, "delta"))
    )
    got = await stub.RecallMemories(
        _recall(user, [1.0, 0.0, 0.0], importance=0, recency=0, semantic=1)
    )
    assert got.memories[0].memory.id == near.id  # the rest tie at 0, newest first
    by_id = {s.memory.id: s.semantic_score for s in got.memories}
    assert by_id[near.id] == pytest.approx(1.0 / math.sqrt(1.01), rel=1e-6)
    assert by_id[far.id] == pytest.approx(0.0, abs=1e-9)
    assert by_id[opposite.id] == 0.0  # negative cosine counts as 0
    assert by_id[plain.id] == 0.0  # no vector yet: still recallable
    assert list(got.signals) == [SIGNAL.RECALL_SIGNAL_SEMANTIC]

    # Hybrid: every part shows in the breakdown, and they add up.
    hybrid = await stub.RecallMemories(_recall(user, [0.0, 1.0, 0.0]))
    top = hybrid.memories[0]
    assert top.memory.id == far.id
    assert top.score == pytest.approx(
        top.importance_score + top.recency_score + top.relevance_score + top.semantic_score
    )
    assert list(hybrid.signals) == [
        SIGNAL.RECALL_SIGNAL_IMPORTANCE,
        SIGNAL.RECALL_SIGNAL_RECENCY,
        SIGNAL.RECALL_SIGNAL_SEMANTIC,
    ]

    # New content without a vector: the old one no longer describes it.
    await stub.UpdateMemory(
        memory_service_pb2.UpdateMemoryRequest(
            memory=memory_pb2.Memory(id=near.id, content="alpha, rewritten"),
            update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        )
    )
    again = await stub.RecallMemories(
        _recall(user, [1.0, 0.0, 0.0], importance=0, recency=0, semantic=1)
    )
    assert {s.memory.id: s.semantic_score for s in again.memories}[near.id] == 0.0


async def test_wrong_vectors_are_invalid(caller_vectors, admin_stub, has_pgvector) -> None:
    if not has_pgvector:
        pytest.skip("this PostgreSQL has no pgvector: vectors are FAILED_PRECONDITION there")
    stub = caller_vectors
    user = await register_user(admin_stub)
    wrong_model = _memory(user, "x", [1.0, 0.0, 0.0])
    wrong_model.embedding_model = "another-model"
    no_model = _memory(user, "x", [1.0, 0.0, 0.0])
    no_model.embedding_model = ""
    cases = {
        "memory.embedding": _memory(user, "x", [1.0, 0.0]),
        "memory.embedding_model": wrong_model,
    }
    for field, memory in cases.items():
        request = memory_service_pb2.StoreMemoryRequest(memory=memory)
        assert await _code(stub.StoreMemory(request)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            [field],
        )
    request = memory_service_pb2.StoreMemoryRequest(memory=no_model)
    assert await _code(stub.StoreMemory(request)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["memory.embedding_model"],
    )
    nan = _memory(user, "x", [float("nan"), 0.0, 0.0])
    assert await _code(stub.StoreMemory(memory_service_pb2.StoreMemoryRequest(memory=nan))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["memory.embedding"],
    )
    assert await _code(stub.RecallMemories(_recall(user, [1.0]))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        ["query_embedding"],
    )


async def test_health_says_whether_recall_is_semantic(channel, app_url: str, has_pgvector) -> None:
    """The suite's own server has no model: NOT_SERVING; the caller-vector one: pgvector's say."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from memory_service.server import SEMANTIC_RECALL_HEALTH

    request = health_pb2.HealthCheckRequest(service=SEMANTIC_RECALL_HEALTH)
    plain = await health_pb2_grpc.HealthStub(channel).Check(request)
    assert plain.status == health_pb2.HealthCheckResponse.NOT_SERVING
    settings = TEST_SETTINGS.with_overrides(embedding_model=CALLER_MODEL, embedding_dimension=3)
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            status = (await health_pb2_grpc.HealthStub(ch).Check(request)).status
    finally:
        await running.stop(0.5)
    expected = "SERVING" if has_pgvector else "NOT_SERVING"
    assert health_pb2.HealthCheckResponse.ServingStatus.Name(status) == expected


async def test_without_pgvector_vectors_are_a_failed_precondition(
    caller_vectors, admin_stub, memory_stub, has_pgvector
) -> None:
    if has_pgvector:
        pytest.skip("this PostgreSQL has pgvector: the no-vector path runs on one without")
    user = await register_user(admin_stub)
    store = memory_service_pb2.StoreMemoryRequest(memory=_memory(user, "x", [1.0, 0.0, 0.0]))
    assert (await _code(caller_vectors.StoreMemory(store)))[0] == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    recall = _recall(user, [1.0, 0.0, 0.0])
    assert (await _code(caller_vectors.RecallMemories(recall)))[0] == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    asks = _recall(user, None, semantic=1.0)
    asks.query = "anything"
    assert (await _code(caller_vectors.RecallMemories(asks)))[0] == (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    # Without asking for vectors, recall is lexical and says so.
    await caller_vectors.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=_memory(user, "likes quiet rooms"))
    )
    plain = await caller_vectors.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query="quiet")
    )
    assert len(plain.memories) == 1
    assert list(plain.signals) == [
        SIGNAL.RECALL_SIGNAL_IMPORTANCE,
        SIGNAL.RECALL_SIGNAL_RECENCY,
        SIGNAL.RECALL_SIGNAL_LEXICAL,
    ]


async def test_the_server_embeds_with_its_own_model(app_url: str, admin_stub, has_pgvector) -> None:
    """The README's example: "lesson format" finds "Prefers bullet points"."""
    if not has_pgvector:
        pytest.skip("this PostgreSQL has no pgvector: the server cannot keep its vectors")
    pytest.importorskip("wordllama", reason="the `embeddings` extra is not installed")
    settings = TEST_SETTINGS.with_overrides(embedding_model="wordllama-l2-supercat-256")
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            user = await register_user(admin_stub)
            contents = [
                "Prefers bullet points over long paragraphs.",
                "Parking spot is behind the gym.",
                "Allergic to peanuts.",
            ]
            for content in contents:
                await stub.StoreMemory(
                    memory_service_pb2.StoreMemoryRequest(memory=_memory(user, content))
                )
            got = await stub.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(user_id=user, query="lesson format")
            )
    finally:
        await running.stop(0.5)
    assert got.memories[0].memory.content == contents[0]
    assert got.memories[0].semantic_score > 0
    assert SIGNAL.RECALL_SIGNAL_SEMANTIC in got.signals
