"""The packaged client against the real server: the calls other services make."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import date

import grpc
import pytest
from faraday.memory.v1 import admin_service_pb2, lesson_pb2
from faraday_memory_client import MemoryClient, field_violations

from memory_service.server import RunningServer
from tests.rpc.helpers import register_user

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
    assert len(auth_calls) == 4  # the metadata hook ran once per call


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
