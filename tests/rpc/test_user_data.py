"""AdminService.ExportUserData and DeleteUserData over a real channel.

Two users with the same kinds of data (preferences, memories with store,
recall and feedback interactions, revisions from feedback and an update,
lessons): every test checks that the call covers all of one user's data and
none of the other's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)
from google.protobuf import field_mask_pb2
from google.protobuf.json_format import MessageToDict

from memory_service.storage import cache
from tests.rpc.helpers import field_violations, register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

JSON = admin_service_pb2.EXPORT_FORMAT_JSON_LINES
PROTOBUF = admin_service_pb2.EXPORT_FORMAT_PROTOBUF
KINDS = ("user", "preferences", "memory", "memory_revision", "interaction", "lesson")

# Every table holding a user's rows, and the column naming the user.
USER_TABLES = {
    "users": "id",
    "user_preferences": "user_id",
    "user_memories": "user_id",
    "memory_revisions": "user_id",
    "memory_interactions": "user_id",
    "lessons": "user_id",
}
# Records of one seeded user: user, preferences, memories, revisions,
# interactions, lessons.
SEEDED_RECORDS = 1 + 1 + 2 + 2 + 6 + 2


@dataclass
class Seeded:
    """One user's data as the RPCs that wrote it answered."""

    user: registry_pb2.User
    preferences: registry_pb2.UserPreferences
    memory_ids: list[int]
    revision_ids: list[int]
    interaction_ids: list[int]
    lessons: list[lesson_pb2.Lesson]


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def _fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def _seed(
    admin: admin_service_pb2_grpc.AdminServiceStub,
    memories: memory_service_pb2_grpc.MemoryServiceStub,
    database_url: str,
    label: str,
) -> Seeded:
    user_id = await register_user(admin, f"{label}@school.example.org")
    user = await admin.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(
                id=user_id,
                email=f"{label}@school.example.org",
                name=f"Teacher {label}",
                is_active=True,
                subjects=["Math"],
            )
        )
    )
    prefs = registry_pb2.UserPreferences(user_id=user_id, theme="dark", language="en-US")
    prefs.notifications.update({"email": True})
    preferences = await admin.UpsertUserPreferences(
        admin_service_pb2.UpsertUserPreferencesRequest(preferences=prefs)
    )

    stored = [
        await store(memories, user_id, f"{label} prefers worked examples.", tags=["style"]),
        await store(memories, user_id, f"{label} teaches fractions to 7B.", category="class"),
    ]
    await memories.RecallMemories(memory_service_pb2.RecallMemoriesRequest(user_id=user_id))
    # The recall queued its rows; ListInteractions on the same server writes them first.
    await memories.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=user_id, page_size=1)
    )
    await memories.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=stored[0].id, helpful=True)
    )
    await memories.UpdateMemory(
        memory_service_pb2.UpdateMemoryRequest(
            memory=memory_pb2.Memory(id=stored[1].id, content=f"{label} teaches decimals to 7B."),
            update_mask=field_mask_pb2.FieldMask(paths=["content"]),
        )
    )
    # store x2, recall x2, feedback x1, update x1; as the database has them.
    rows = await _fetch(
        database_url, "SELECT id FROM memory_interactions WHERE user_id = $1", user_id
    )
    assert len(rows) == 6
    # The feedback's importance and the update's content kept a revision each.
    revisions = await _fetch(
        database_url, "SELECT id FROM memory_revisions WHERE user_id = $1", user_id
    )
    assert len(revisions) == 2

    category = await admin.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(name=f"Math {label}")
        )
    )
    lessons = [
        await admin.UpsertLesson(
            admin_service_pb2.UpsertLessonRequest(
                lesson=lesson_pb2.Lesson(
                    title=f"{label} lesson {n}",
                    user_id=user_id,
                    subject_category_id=category.id,
                    tags=["fractions"],
                )
            )
        )
        for n in (1, 2)
    ]
    return Seeded(
        user=user,
        preferences=preferences,
        memory_ids=[m.id for m in stored],
        revision_ids=[r["id"] for r in revisions],
        interaction_ids=[r["id"] for r in rows],
        lessons=lessons,
    )


@pytest.fixture
async def two_users(admin_stub, memory_stub, database_url) -> tuple[Seeded, Seeded]:
    a = await _seed(admin_stub, memory_stub, database_url, "alice")
    b = await _seed(admin_stub, memory_stub, database_url, "bob")
    return a, b


async def _export(
    admin: admin_service_pb2_grpc.AdminServiceStub, user_id: str, export_format: int
) -> list[admin_service_pb2.ExportUserDataResponse]:
    call = admin.ExportUserData(
        admin_service_pb2.ExportUserDataRequest(user_id=user_id, format=export_format)
    )
    return [response async for response in call]


async def _export_error(
    admin: admin_service_pb2_grpc.AdminServiceStub, user_id: str, export_format: int = PROTOBUF
) -> tuple[grpc.aio.AioRpcError, list[admin_service_pb2.ExportUserDataResponse]]:
    """The error ending an export, and the messages that came before it."""
    received: list[admin_service_pb2.ExportUserDataResponse] = []
    call = admin.ExportUserData(
        admin_service_pb2.ExportUserDataRequest(user_id=user_id, format=export_format)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for response in call:
            received.append(response)
    return info.value, received


def _ids(records: Sequence[Any], kind: str) -> list[int | str]:
    return [getattr(r, kind).id for r in records if r.WhichOneof("record") == kind]


def _assert_kind_order(kinds: list[str]) -> None:
    """The user first, then preferences, memories, revisions, interactions, lessons, in order."""
    assert kinds[0] == "user"
    positions = [KINDS.index(k) for k in kinds]
    assert positions == sorted(positions), kinds


# --- ExportUserData -------------------------------------------------------


@pytest.mark.parametrize("export_format", [PROTOBUF, admin_service_pb2.EXPORT_FORMAT_UNSPECIFIED])
async def test_export_streams_every_record_of_the_user_once(
    admin_stub, memory_stub, lesson_stub, two_users, export_format
) -> None:
    a, b = two_users
    records = await _export(admin_stub, a.user.id, export_format)

    kinds = [r.WhichOneof("record") for r in records]
    _assert_kind_order(kinds)
    assert kinds.count("user") == 1 and kinds.count("preferences") == 1
    assert records[0].user == a.user
    assert next(r.preferences for r in records if r.HasField("preferences")) == a.preferences

    # Every id of A exactly once (lists, not sets: duplicates would show).
    assert sorted(_ids(records, "memory")) == sorted(a.memory_ids)
    assert sorted(_ids(records, "memory_revision")) == sorted(a.revision_ids)
    assert sorted(_ids(records, "interaction")) == sorted(a.interaction_ids)
    assert sorted(_ids(records, "lesson")) == sorted(lesson.id for lesson in a.lessons)
    assert len(records) == SEEDED_RECORDS
    # Nothing of B.
    assert not set(_ids(records, "memory")) & set(b.memory_ids)
    assert not set(_ids(records, "memory_revision")) & set(b.revision_ids)
    assert not set(_ids(records, "interaction")) & set(b.interaction_ids)
    assert not set(_ids(records, "lesson")) & {x.id for x in b.lessons}
    assert {getattr(r, r.WhichOneof("record")).user_id for r in records[1:]} == {a.user.id}

    # The records read as the other RPCs answer them.
    for r in records:
        if r.HasField("memory"):
            got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=r.memory.id))
            assert r.memory == got
        if r.HasField("memory_revision"):
            listed_revisions = await memory_stub.ListMemoryRevisions(
                memory_service_pb2.ListMemoryRevisionsRequest(memory_id=r.memory_revision.memory_id)
            )
            assert r.memory_revision in listed_revisions.revisions
        if r.HasField("lesson"):
            got = await lesson_stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=r.lesson.id))
            assert r.lesson == got
            assert r.lesson.subject_category_name == "Math alice"
    listed = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=a.user.id, page_size=100)
    )
    assert sorted(
        (r.interaction for r in records if r.HasField("interaction")), key=lambda i: i.id
    ) == sorted(listed.interactions, key=lambda i: i.id)
    feedback = [
        r.interaction
        for r in records
        if r.HasField("interaction") and r.interaction.type == memory_pb2.INTERACTION_TYPE_FEEDBACK
    ]
    assert len(feedback) == 1 and feedback[0].feedback["helpful"] is True
    revisions = [r.memory_revision for r in records if r.HasField("memory_revision")]
    assert {(r.memory_id, r.content, r.importance) for r in revisions} == {
        (a.memory_ids[0], "alice prefers worked examples.", 0.5),
        (a.memory_ids[1], "alice teaches fractions to 7B.", 0.5),
    }


async def test_export_json_lines_carry_the_same_records(admin_stub, two_users) -> None:
    a, b = two_users
    as_protobuf = await _export(admin_stub, a.user.id, PROTOBUF)
    as_json = await _export(admin_stub, a.user.id, JSON)
    assert len(as_json) == len(as_protobuf)

    parsed = []
    for response in as_json:
        assert response.WhichOneof("record") == "json_line"
        line = response.json_line
        assert line.endswith("\n") and line.count("\n") == 1
        item = json.loads(line)
        assert set(item) == {"kind", "data"} and item["kind"] in KINDS
        parsed.append(item)

    _assert_kind_order([item["kind"] for item in parsed])
    for item, record in zip(parsed, as_protobuf, strict=True):
        kind = record.WhichOneof("record")
        assert item["kind"] == kind
        # proto3 JSON form with the .proto field names: int64 ids as strings,
        # enums by name, timestamps in RFC 3339.
        expected = MessageToDict(getattr(record, kind), preserving_proto_field_name=True)
        assert item["data"] == expected

    assert parsed[0]["data"]["id"] == a.user.id
    assert parsed[0]["data"]["email"] == "alice@school.example.org"
    memory_ids = [int(i["data"]["id"]) for i in parsed if i["kind"] == "memory"]
    assert sorted(memory_ids) == sorted(a.memory_ids)
    interaction_types = {i["data"]["type"] for i in parsed if i["kind"] == "interaction"}
    assert interaction_types == {
        "INTERACTION_TYPE_STORE",
        "INTERACTION_TYPE_RECALL",
        "INTERACTION_TYPE_FEEDBACK",
        "INTERACTION_TYPE_UPDATE",
    }
    revision = next(i["data"] for i in parsed if i["kind"] == "memory_revision")
    assert revision["changed_by"] == "local:local" and "change_time" in revision
    lesson = next(i["data"] for i in parsed if i["kind"] == "lesson")
    assert lesson["status"] == "LESSON_STATUS_DRAFT" and "create_time" in lesson
    assert b.user.id not in "".join(r.json_line for r in as_json)


async def test_export_of_a_user_without_data_has_just_the_user(admin_stub) -> None:
    user_id = await register_user(admin_stub)
    records = await _export(admin_stub, user_id, PROTOBUF)
    assert [r.WhichOneof("record") for r in records] == ["user"]
    assert records[0].user.id == user_id


async def test_export_of_an_unknown_user_is_not_found_before_any_record(admin_stub) -> None:
    for export_format in (PROTOBUF, JSON):
        error, received = await _export_error(
            admin_stub, "6f1c2b9e-4a8d-4c1e-9a55-0d6a3c7e2f10", export_format
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
        assert received == []


@pytest.mark.parametrize(
    ("user_id", "export_format", "field"),
    [
        ("", PROTOBUF, "user_id"),
        ("not-a-uuid", JSON, "user_id"),
        ("6f1c2b9e-4a8d-4c1e-9a55-0d6a3c7e2f10", 7, "format"),
    ],
)
async def test_export_rejects_a_bad_request(admin_stub, user_id, export_format, field) -> None:
    error, received = await _export_error(admin_stub, user_id, export_format)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field_violations(error) == [field]
    assert received == []


# --- DeleteUserData -------------------------------------------------------


async def _row_counts(database_url: str, user_id: str) -> dict[str, int]:
    counts = {}
    for table, column in USER_TABLES.items():
        rows = await _fetch(
            database_url, f"SELECT count(*) AS n FROM {table} WHERE {column} = $1", user_id
        )
        counts[table] = rows[0]["n"]
    return counts


async def test_delete_user_data_erases_the_user_and_nothing_else(
    cached_stubs, database_url
) -> None:
    admin = cached_stubs.admin_stub
    a = await _seed(admin, cached_stubs.memory_stub, database_url, "alice")
    b = await _seed(admin, cached_stubs.memory_stub, database_url, "bob")
    b_before = await _row_counts(database_url, b.user.id)
    assert b_before == {
        "users": 1,
        "user_preferences": 1,
        "user_memories": 2,
        "memory_revisions": 2,
        "memory_interactions": 6,
        "lessons": 2,
    }
    # A's lessons (and one of B's) through the cached server: now in Redis.
    for lesson in [*a.lessons, b.lessons[0]]:
        got = await cached_stubs.lesson_stub.GetLesson(
            lesson_service_pb2.GetLessonRequest(id=lesson.id)
        )
        assert got == lesson
        assert await cached_stubs.redis.get(cache.key(lesson.id))

    erased = await admin.DeleteUserData(admin_service_pb2.DeleteUserDataRequest(user_id=a.user.id))

    assert erased == admin_service_pb2.DeleteUserDataResponse(
        memories=2, interactions=6, lessons=2, preferences=1, memory_revisions=2
    )
    assert await _row_counts(database_url, a.user.id) == dict.fromkeys(USER_TABLES, 0)
    # Also by A's memory and lesson ids, in case a row named another user.
    assert not await _fetch(
        database_url, "SELECT id FROM memory_interactions WHERE memory_id = ANY($1)", a.memory_ids
    )
    assert not await _fetch(
        database_url, "SELECT id FROM user_memories WHERE id = ANY($1)", a.memory_ids
    )
    assert not await _fetch(
        database_url, "SELECT id FROM memory_revisions WHERE memory_id = ANY($1)", a.memory_ids
    )
    assert not await _fetch(
        database_url, "SELECT id FROM lessons WHERE id = ANY($1)", [x.id for x in a.lessons]
    )
    assert await _row_counts(database_url, b.user.id) == b_before

    # The cached lessons went with the rows; B's entry stays.
    for lesson in a.lessons:
        error = await _error(
            cached_stubs.lesson_stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson.id))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
    assert await cached_stubs.redis.get(cache.key(b.lessons[0].id))
    kept = await cached_stubs.lesson_stub.GetLesson(
        lesson_service_pb2.GetLessonRequest(id=b.lessons[0].id)
    )
    assert kept == b.lessons[0]

    # Gone for good: erasing or exporting again finds no user.
    again = await _error(
        admin.DeleteUserData(admin_service_pb2.DeleteUserDataRequest(user_id=a.user.id))
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND, again.details()
    error, received = await _export_error(admin, a.user.id)
    assert error.code() == grpc.StatusCode.NOT_FOUND and received == []
    # And B's export is whole.
    b_records = await _export(admin, b.user.id, PROTOBUF)
    assert len(b_records) == SEEDED_RECORDS


async def test_delete_user_data_of_a_user_without_data(admin_stub, database_url) -> None:
    user_id = await register_user(admin_stub)
    erased = await admin_stub.DeleteUserData(
        admin_service_pb2.DeleteUserDataRequest(user_id=user_id)
    )
    assert erased == admin_service_pb2.DeleteUserDataResponse()
    assert await _row_counts(database_url, user_id) == dict.fromkeys(USER_TABLES, 0)


async def test_delete_user_data_of_an_unknown_user_is_not_found(admin_stub) -> None:
    error = await _error(
        admin_stub.DeleteUserData(
            admin_service_pb2.DeleteUserDataRequest(user_id="6f1c2b9e-4a8d-4c1e-9a55-0d6a3c7e2f10")
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


@pytest.mark.parametrize("user_id", ["", "not-a-uuid"])
async def test_delete_user_data_rejects_a_bad_user_id(admin_stub, user_id) -> None:
    error = await _error(
        admin_stub.DeleteUserData(admin_service_pb2.DeleteUserDataRequest(user_id=user_id))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field_violations(error) == ["user_id"]


async def _wait_for(database_url: str, sql: str, *, timeout_seconds: float = 30.0) -> None:
    """Poll `sql` (one boolean) until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while not (await _fetch(database_url, sql))[0][0]:
        assert asyncio.get_running_loop().time() < deadline, f"never true: {sql}"
        await asyncio.sleep(0.05)


async def test_delete_user_data_waits_for_a_store_in_flight_and_erases_it(
    admin_stub, database_url
) -> None:
    user_id = await register_user(admin_stub)
    # A store that has passed its foreign key check (holding FOR KEY SHARE on
    # the user row) but not committed when the erasure starts.
    conn = await asyncpg.connect(database_url)
    try:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO user_memories (user_id, content, category) VALUES ($1, 'late', 'fact')",
            user_id,
        )
        erasing = asyncio.ensure_future(
            admin_stub.DeleteUserData(admin_service_pb2.DeleteUserDataRequest(user_id=user_id))
        )
        await _wait_for(
            database_url,
            "SELECT count(*) > 0 FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'",
        )
        assert not erasing.done()
        await tx.commit()
    finally:
        await conn.close()
    erased = await erasing
    assert erased.memories == 1
    assert await _row_counts(database_url, user_id) == dict.fromkeys(USER_TABLES, 0)


async def test_an_abandoned_export_gives_its_connection_back(admin_stub, database_url) -> None:
    user_id = await register_user(admin_stub)
    # More than gRPC's flow-control window holds, so the server is still
    # inside the export's snapshot when the client goes away.
    await _fetch(
        database_url,
        "INSERT INTO user_memories (user_id, content, category)"
        " SELECT $1, repeat('x', 8000), 'fact' FROM generate_series(1, 2000)",
        user_id,
    )
    exporting = (
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'faraday-memory'"
        " AND state = 'idle in transaction'"
    )
    call = admin_stub.ExportUserData(admin_service_pb2.ExportUserDataRequest(user_id=user_id))
    first = await call.read()
    assert first.HasField("user")
    await _wait_for(database_url, exporting)
    call.cancel()
    await _wait_for(database_url, exporting.replace("count(*) > 0", "count(*) = 0"))
