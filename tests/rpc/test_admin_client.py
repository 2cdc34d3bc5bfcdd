"""The packaged AdminClient against the real server: the calls a platform service makes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import date

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    lesson_service_pb2,
)
from faraday_memory_client import AdminClient, MemoryClient, capability, field_violations

from memory_service.server import RunningServer

pytestmark = pytest.mark.asyncio(loop_scope="session")

_ADMIN = "/faraday.memory.v1.AdminService/"
_EXPORT = _ADMIN + "ExportUserData"


@pytest.fixture
def auth_calls() -> list[str]:
    return []


@pytest.fixture
async def admin(server: RunningServer, auth_calls: list[str]) -> AsyncIterator[AdminClient]:
    async def auth() -> Sequence[tuple[str, str]]:
        auth_calls.append("called")
        return [("authorization", "Bearer admin-token")]

    async with AdminClient(f"127.0.0.1:{server.port}", metadata_provider=auth) as c:
        yield c


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[MemoryClient]:
    async with MemoryClient(f"127.0.0.1:{server.port}") as c:
        yield c


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_registry_upserts_through_the_admin_client(admin, auth_calls) -> None:
    user = await admin.upsert_user(
        email="ada@school.example.org", name="Ada", subjects=["Math"], grade_levels=["7"]
    )
    assert (user.name, list(user.subjects), user.is_active) == ("Ada", ["Math"], True)
    inactive = await admin.upsert_user(id=user.id, email=user.email, is_active=False)
    # Matched by email; is_active left out keeps the stored value, the rest is replaced.
    again = await admin.upsert_user(email="ada@school.example.org", name="Ada L.")
    assert (again.id, again.name, again.is_active) == (user.id, "Ada L.", False)
    assert inactive.is_active is False and list(again.subjects) == []

    prefs = await admin.upsert_user_preferences(
        user.id, theme="dark", notifications={"email": True}, timezone="America/Chicago"
    )
    assert (prefs.user_id, prefs.theme, prefs.timezone) == (user.id, "dark", "America/Chicago")
    assert prefs.notifications["email"] is True

    math = await admin.upsert_subject_category(name="Mathematics", metadata={"code": "MA"})
    algebra = await admin.upsert_subject_category(name="Algebra", parent_id=math.id)
    assert (math.level, math.is_active, math.metadata["code"]) == (1, True, "MA")
    assert (algebra.parent_id, algebra.level) == (math.id, 2)
    renamed = await admin.upsert_subject_category(id=algebra.id, name="Algebra I", is_active=False)
    assert (renamed.id, renamed.name, renamed.is_active) == (algebra.id, "Algebra I", False)

    profile = await admin.upsert_assistant_profile(
        name="Lesson Planner",
        model_version="gpt-4o-2024-08-06",
        configuration={"temperature": 0.2},
        capabilities=[
            capability("quiz", parameters={"max_questions": 10}, priority=2),
            capability("outline", is_enabled=False),
        ],
    )
    assert profile.is_active is True and profile.configuration["temperature"] == 0.2
    by_name = {c.name: c for c in profile.capabilities}
    assert by_name["quiz"].parameters["max_questions"] == 10 and by_name["quiz"].priority == 2
    assert (by_name["quiz"].is_enabled, by_name["outline"].is_enabled) == (True, False)
    same = await admin.upsert_assistant_profile(name="Lesson Planner", model_version="gpt-4o")
    assert (same.id, same.model_version, list(same.capabilities)) == (profile.id, "gpt-4o", [])
    assert len(auth_calls) == 9  # the metadata hook ran once per call


async def test_lessons_through_the_admin_client(admin, client, lesson_stub) -> None:
    user = await admin.upsert_user(email="bo@school.example.org")
    math = await admin.upsert_subject_category(name="Math")
    lesson = await admin.upsert_lesson(
        title="Dividing fractions with models",
        user_id=user.id,
        subject_category_id=math.id,
        grade_level="7",
        week_of=date(2025, 3, 3),
        lesson_data={"text": "Use fraction bars", "subject": "math"},
        objectives=["divide fractions", {"stretch": "explain why"}],
        materials="fraction bars",
        status=lesson_pb2.LESSON_STATUS_PUBLISHED,
        tags=["fractions"],
    )
    assert lesson.id > 0 and lesson.subject_category_name == "Math"
    assert (lesson.week_of.year, lesson.week_of.month, lesson.week_of.day) == (2025, 3, 3)
    assert lesson.objectives.list_value.values[0].string_value == "divide fractions"
    assert lesson.materials.string_value == "fraction bars"
    assert not lesson.HasField("feedback")
    got = await lesson_stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson.id))
    assert got == lesson

    replaced = await admin.upsert_lesson(id=lesson.id, title="Fractions, again", user_id=user.id)
    assert (replaced.id, replaced.title, replaced.status) == (
        lesson.id,
        "Fractions, again",
        lesson_pb2.LESSON_STATUS_DRAFT,
    )
    assert [x.id for x in (await client.list_lessons(user_id=user.id)).lessons] == [lesson.id]

    await admin.delete_lesson(lesson.id)
    error = await _error(admin.delete_lesson(lesson.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await _error(client.get_lesson(lesson.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_admin_client_errors(admin) -> None:
    error = await _error(admin.upsert_user(email="not-an-email"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(error)] == ["user.email"]

    first = await admin.upsert_user(email="cy@school.example.org")
    other = await admin.upsert_user(email="di@school.example.org")
    error = await _error(admin.upsert_user(id=other.id, email=first.email))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    unknown = "00000000-0000-4000-8000-000000000000"
    for call in (
        admin.upsert_user_preferences(unknown, theme="dark"),
        admin.upsert_subject_category(id=999_999, name="Nowhere"),
        admin.upsert_assistant_profile(id=999_999, name="Nobody", model_version="x"),
        admin.upsert_lesson(title="Orphan", user_id=unknown),
        admin.delete_user_data(unknown),
    ):
        assert (await _error(call)).code() == grpc.StatusCode.NOT_FOUND

    top = await admin.upsert_subject_category(name="Level 1")
    parent = top
    for level in range(2, 6):
        parent = await admin.upsert_subject_category(name=f"Level {level}", parent_id=parent.id)
    error = await _error(admin.upsert_subject_category(name="Level 6", parent_id=parent.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def _seed_user(admin: AdminClient, client: MemoryClient, email: str) -> str:
    """A user with preferences, two memories (one revised) and a lesson."""
    user = await admin.upsert_user(email=email, name="Eve")
    await admin.upsert_user_preferences(user.id, theme="light")
    memory = await client.store_memory(user_id=user.id, content="Likes tables", category="fact")
    await client.store_memory(user_id=user.id, content="Teaches 6A", category="class")
    await client.record_feedback(memory.id, helpful=True)
    await admin.upsert_lesson(title="Ratio tables", user_id=user.id)
    return user.id


async def test_export_user_data_through_the_admin_client(admin, client) -> None:
    user_id = await _seed_user(admin, client, "eve@school.example.org")
    await _seed_user(admin, client, "fay@school.example.org")

    records = [r async for r in admin.export_user_data(user_id)]
    kinds = [r.WhichOneof("record") for r in records]
    assert kinds == [
        "user",
        "preferences",
        "memory",
        "memory",
        "memory_revision",
        "interaction",  # two stores and a feedback
        "interaction",
        "interaction",
        "lesson",
    ]
    assert records[0].user.id == user_id

    lines = [r.json_line async for r in admin.export_user_data(user_id, format="json_lines")]
    assert [json.loads(line)["kind"] for line in lines] == kinds
    assert all(line.endswith("\n") for line in lines)

    # Leaving the loop early cancels the call; the next one works.
    async for record in admin.export_user_data(user_id):
        assert record.HasField("user")
        break
    assert len([r async for r in admin.export_user_data(user_id)]) == len(records)

    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in admin.export_user_data(unknown):
            raise AssertionError("no record of an unknown user")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in admin.export_user_data("not-a-uuid"):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(info.value)] == ["user_id"]


async def test_delete_user_data_through_the_admin_client(admin, client) -> None:
    user_id = await _seed_user(admin, client, "gus@school.example.org")
    other = await _seed_user(admin, client, "hal@school.example.org")
    erased = await admin.delete_user_data(user_id)
    assert (
        erased.memories,
        erased.memory_revisions,
        erased.interactions,
        erased.lessons,
        erased.preferences,
    ) == (2, 1, 3, 1, 1)
    assert (await _error(admin.delete_user_data(user_id))).code() == grpc.StatusCode.NOT_FOUND
    listed = await client.list_memories(other)
    assert len(listed.memories) == 2  # the other user keeps everything


# --- Retries: a proxy loses the first response ------------------------------


async def test_an_upsert_retried_after_a_lost_response_writes_once(lossy, admin) -> None:
    proxy, lossy_admin = await lossy(_ADMIN + "UpsertUser", AdminClient)
    user = await lossy_admin.upsert_user(email="ivy@school.example.org", name="Ivy")
    assert len(proxy.seen[_ADMIN + "UpsertUser"]) == 2  # the lost attempt and the retry
    again = await admin.upsert_user(email="ivy@school.example.org", name="Ivy")
    assert again.id == user.id  # one user, the one the lost attempt created


async def test_creating_a_lesson_is_not_retried_but_replacing_one_is(lossy, admin, client) -> None:
    user = await admin.upsert_user(email="jo@school.example.org")
    method = _ADMIN + "UpsertLesson"
    proxy, lossy_admin = await lossy(method, AdminClient)
    error = await _error(lossy_admin.upsert_lesson(title="Area models", user_id=user.id))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert len(proxy.seen[method]) == 1
    (created,) = (await client.list_lessons(user_id=user.id)).lessons  # the lost one did commit

    proxy, lossy_admin = await lossy(method, AdminClient)
    replaced = await lossy_admin.upsert_lesson(id=created.id, title="Area", user_id=user.id)
    assert len(proxy.seen[method]) == 2
    assert [x.title for x in (await client.list_lessons(user_id=user.id)).lessons] == ["Area"]
    assert replaced.id == created.id


@pytest.mark.parametrize("method", ["DeleteUserData", "DeleteLesson"])
async def test_deletes_are_not_retried(lossy, admin, method) -> None:
    user = await admin.upsert_user(email="kim@school.example.org")
    lesson = await admin.upsert_lesson(title="Volume", user_id=user.id)
    proxy, lossy_admin = await lossy(_ADMIN + method, AdminClient)
    call = (
        lossy_admin.delete_user_data(user.id)
        if method == "DeleteUserData"
        else lossy_admin.delete_lesson(lesson.id)
    )
    assert (await _error(call)).code() == grpc.StatusCode.UNAVAILABLE
    assert len(proxy.seen[_ADMIN + method]) == 1
    # The lost attempt committed: a retry would have answered NOT_FOUND.
    assert (await _error(admin.delete_lesson(lesson.id))).code() == grpc.StatusCode.NOT_FOUND


async def test_export_is_retried_before_its_first_record_only(lossy, admin, client) -> None:
    user_id = await _seed_user(admin, client, "lea@school.example.org")
    expected = [r async for r in admin.export_user_data(user_id)]

    proxy, lossy_admin = await lossy(_EXPORT, AdminClient, streams=frozenset({_EXPORT}))
    assert [r async for r in lossy_admin.export_user_data(user_id)] == expected
    assert len(proxy.seen[_EXPORT]) == 2

    proxy, lossy_admin = await lossy(
        _EXPORT, AdminClient, streams=frozenset({_EXPORT}), lose_after=2
    )
    received: list[admin_service_pb2.ExportUserDataResponse] = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for record in lossy_admin.export_user_data(user_id):
            received.append(record)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert received == expected[:2]  # a restart would have yielded these twice
    assert len(proxy.seen[_EXPORT]) == 1
