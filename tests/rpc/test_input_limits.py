"""No request costs far more than its size, and hostile inputs are INVALID_ARGUMENT, not INTERNAL.

Each test sends what answered INTERNAL (or RESOURCE_EXHAUSTED, or stalled
the server) before the limits: a field mask of 100,000 unknown paths,
unbounded repeated ids, subnormal weights, etags of thousands of digits and
page tokens that nest deeply.
"""

from __future__ import annotations

import asyncio
import base64
import time

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from memory_service.server import RunningServer
from tests.rpc.helpers import field_violations, register_user, status_details
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

VIOLATIONS_MAX = 10
CLIENT_METADATA_LIMIT = 16 * 1024


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def _omitted(error: grpc.aio.AioRpcError) -> str:
    for detail in status_details(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.metadata.get("omitted_violations", "")
    raise AssertionError("no ErrorInfo")


def _mask_update(memory_id: int, paths: list[str]) -> memory_service_pb2.UpdateMemoryRequest:
    return memory_service_pb2.UpdateMemoryRequest(
        memory=memory_pb2.Memory(id=memory_id, content="x", category="y"),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


async def test_a_huge_mask_is_refused_cheaply_without_stalling_others(
    server: RunningServer, memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user)
    request = _mask_update(memory.id, [f"p{i}" for i in range(100_000)])
    options = [("grpc.max_metadata_size", CLIENT_METADATA_LIMIT)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as ch:
        stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
        get = memory_service_pb2.GetMemoryRequest(id=memory.id)
        await stub.GetMemory(get)  # the channel is connected before timing

        started = time.perf_counter()
        big = asyncio.ensure_future(_error(stub.UpdateMemory(request)))
        # Another caller's reads, one after another, for as long as the big
        # request is in flight: the slowest shows any stall of the server.
        get_seconds = 0.0
        while not big.done():
            get_started = time.perf_counter()
            await memory_stub.GetMemory(get)
            get_seconds = max(get_seconds, time.perf_counter() - get_started)
        error = await big
        big_seconds = time.perf_counter() - started
    print(
        f"\n100,000-path mask answered in {big_seconds * 1000:.1f} ms;"
        f" the slowest concurrent GetMemory took {get_seconds * 1000:.1f} ms"
    )
    # INVALID_ARGUMENT, not the RESOURCE_EXHAUSTED of trailers over the client's limit.
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field_violations(error) == ["update_mask"]
    assert "at most 32 paths" in (error.details() or "")
    assert get_seconds < 0.2


async def test_at_most_ten_violations_are_listed_and_the_rest_counted(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user)
    error = await _error(
        memory_stub.UpdateMemory(_mask_update(memory.id, [f"p{i}" for i in range(32)]))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["update_mask"] * VIOLATIONS_MAX
    assert _omitted(error) == "22"
    assert (error.details() or "").endswith("and 22 more not listed")
    # A path is echoed in at most 64 characters, so ten fit any client's limit.
    error = await _error(
        memory_stub.UpdateMemory(
            _mask_update(memory.id, [f"{i}" + "x" * 30_000 for i in range(10)])
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(error.details() or "") < 4 * 1024

    error = await _error(
        admin_stub.UpsertLesson(
            admin_service_pb2.UpsertLessonRequest(
                lesson=lesson_pb2.Lesson(title="T", user_id=user, related_lesson_ids=[-1] * 50)
            )
        )
    )
    assert field_violations(error) == [f"lesson.related_lesson_ids[{i}]" for i in range(10)]
    assert _omitted(error) == "40"


async def test_repeated_ids_and_capabilities_are_capped(admin_stub) -> None:
    user = await register_user(admin_stub)
    error = await _error(
        admin_stub.UpsertLesson(
            admin_service_pb2.UpsertLessonRequest(
                lesson=lesson_pb2.Lesson(
                    title="T", user_id=user, related_lesson_ids=list(range(1, 100_001))
                )
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["lesson.related_lesson_ids"]
    profile = admin_service_pb2.UpsertAssistantProfileRequest()
    profile.profile.name, profile.profile.model_version = "Planner", "gpt-4o"
    for i in range(51):
        profile.profile.capabilities.add(name=f"c{i}")
    error = await _error(admin_stub.UpsertAssistantProfile(profile))
    assert field_violations(error) == ["profile.capabilities"]


async def test_subnormal_weights_and_importance_are_invalid(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    await store(memory_stub, user, importance=0.5)
    for name in ("importance", "recency", "relevance"):
        for value in (5e-324, 2.2e-308, 1e-7):
            request = memory_service_pb2.RecallMemoriesRequest(user_id=user, query="bullet")
            setattr(request.weights, name, value)
            error = await _error(memory_stub.RecallMemories(request))
            assert field_violations(error) == [f"weights.{name}"], (name, value)
        request = memory_service_pb2.RecallMemoriesRequest(user_id=user, query="bullet")
        setattr(request.weights, name, 1e-6)
        await memory_stub.RecallMemories(request)
    # A subnormal importance, once stored, made every recall weighting it
    # below 1 fail with PostgreSQL's "value out of range: underflow".
    error = await _error(store(memory_stub, user, importance=5e-324))
    assert field_violations(error) == ["memory.importance"]
    error = await _error(store(memory_stub, user, confidence=5e-324))
    assert field_violations(error) == ["memory.confidence"]


async def test_feedback_never_drives_importance_subnormal(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user, importance=1e-6)
    response = await memory_stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=memory.id, helpful=False)
    )
    # 0.8e-6 is below the smallest importance a caller may set: it is 0.
    assert response.memory.importance == 0.0
    request = memory_service_pb2.RecallMemoriesRequest(user_id=user)
    request.weights.importance = 1e-6
    recalled = await memory_stub.RecallMemories(request)
    assert [s.memory.id for s in recalled.memories] == [memory.id]


async def test_long_etags_are_invalid(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user)
    for body in ("1" * 4301, "9" * 100_000, "0" * 11 + "1"):
        update = _mask_update(memory.id, ["content"])
        update.memory.etag = f'W/"{body}"'
        error = await _error(memory_stub.UpdateMemory(update))
        assert field_violations(error) == ["memory.etag"]
        delete = memory_service_pb2.DeleteMemoryRequest(id=memory.id, etag=body)
        error = await _error(memory_stub.DeleteMemory(delete))
        assert field_violations(error) == ["etag"]


def _token(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


async def test_crafted_page_tokens_are_invalid(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    tokens = [
        _token("[" * 100_000),  # RecursionError in json.loads
        _token('{"p":' + "[" * 300),  # short, nested, unterminated
        _token("[" * 380),
        "A" * 513,
    ]
    for token in tokens:
        for request in (
            memory_service_pb2.ListMemoriesRequest(user_id=user, page_token=token),
            memory_service_pb2.ListInteractionsRequest(user_id=user, page_token=token),
        ):
            method = getattr(memory_stub, type(request).__name__.removesuffix("Request"))
            error = await _error(method(request))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert field_violations(error) == ["page_token"]
