"""MemoryService.ListMemoryRevisions and the revisions every change keeps, over a real channel.

The test server runs without authentication, so every change it makes is
the `local:local` caller's; tests/rpc/test_auth.py has service tokens and
user JWTs, and the wrong caller.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

from tests.rpc.helpers import field_violations, recalls_written, register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

Stub = memory_service_pb2_grpc.MemoryServiceStub


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def _update(stub: Stub, memory_id: int, paths: list[str], **fields: Any) -> memory_pb2.Memory:
    memory = memory_pb2.Memory(id=memory_id, **fields)
    return await stub.UpdateMemory(
        memory_service_pb2.UpdateMemoryRequest(
            memory=memory, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
    )


async def _revisions(stub: Stub, memory_id: int, **request: Any) -> list[memory_pb2.MemoryRevision]:
    response = await stub.ListMemoryRevisions(
        memory_service_pb2.ListMemoryRevisionsRequest(memory_id=memory_id, **request)
    )
    return list(response.revisions)


async def _count(url: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_each_change_keeps_the_values_it_replaced_newest_first(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    expire = _timestamp(datetime.now(UTC) + timedelta(days=7))
    first = await store(
        memory_stub,
        user,
        "Class 7B meets in room 12.",
        category="class_context",
        importance=0.8,
        tags=["grade-7", "room"],
        metadata={"source_doc": "timetable"},
        expire_time=expire,
    )
    assert await _revisions(memory_stub, first.id) == []  # storing keeps none

    before = datetime.now(UTC)
    second = await _update(memory_stub, first.id, ["content"], content="Class 7B meets in room 14.")
    third = await _update(
        memory_stub,
        first.id,
        ["content", "tags"],
        content="Class 7B meets in the library.",
        tags=["grade-7"],
    )
    after = datetime.now(UTC)
    assert (second.version, third.version) == (2, 3)

    newer, older = await _revisions(memory_stub, first.id)
    assert newer.id > older.id
    # Newest first: what the second update replaced, then what the first did.
    assert (newer.version, newer.content, list(newer.tags)) == (
        2,
        "Class 7B meets in room 14.",
        ["grade-7", "room"],
    )
    assert (older.version, older.content) == (1, "Class 7B meets in room 12.")
    for revision in (newer, older):
        assert revision.memory_id == first.id and revision.user_id == user
        assert revision.importance == pytest.approx(0.8)
        assert revision.category == "class_context"
        assert dict(revision.metadata) == {"source_doc": "timetable"}
        assert revision.expire_time.seconds == expire.seconds
        assert revision.changed_by == "local:local"  # the caller, never request text
        assert before <= revision.change_time.ToDatetime(UTC) <= after
    # The memory itself has the newest values only.
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=first.id))
    assert (got.content, list(got.tags), got.version) == (
        "Class 7B meets in the library.",
        ["grade-7"],
        3,
    )


@pytest.mark.parametrize(
    ("path", "fields", "kept"),
    [
        ("content", {"content": "Prefers numbered lists."}, ("content", "Prefers bullet points.")),
        ("importance", {"importance": 0.9}, ("importance", 0.5)),
        ("category", {"category": "style"}, ("category", "preference")),
        ("tags", {"tags": ["format"]}, ("tags", ["lists"])),
        ("metadata", {}, ("metadata", {"origin": "chat"})),
        ("expire_time", {}, ("expire_time", "set")),
    ],
)
async def test_every_tracked_field_keeps_a_revision(
    memory_stub, admin_stub, path, fields, kept
) -> None:
    user = await register_user(admin_stub)
    expire = _timestamp(datetime.now(UTC) + timedelta(days=3))
    memory = await store(
        memory_stub, user, tags=["lists"], metadata={"origin": "chat"}, expire_time=expire
    )
    await _update(memory_stub, memory.id, [path], **fields)  # unset in `memory`: cleared
    (revision,) = await _revisions(memory_stub, memory.id)
    name, value = kept
    if name == "expire_time":
        assert revision.expire_time.seconds == expire.seconds
    elif name == "metadata":
        assert dict(revision.metadata) == value
    elif name == "tags":
        assert list(revision.tags) == value
    else:
        assert getattr(revision, name) == value
    assert revision.version == 1


async def test_changes_of_nothing_tracked_keep_no_revision(
    memory_stub, admin_stub, database_url, server
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user, "Prefers bullet points.", importance=1.0, tags=["a"])
    # Recall bumps last_access_time only.
    recalled = await memory_stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query="bullet points")
    )
    assert [s.memory.id for s in recalled.memories] == [memory.id]
    await recalls_written(server)
    # Fields that are not revised, and the same values again.
    await _update(memory_stub, memory.id, ["context", "source", "confidence"], source="chat")
    await _update(
        memory_stub,
        memory.id,
        ["content", "tags", "importance"],
        content="Prefers bullet points.",
        tags=["a"],
        importance=1.0,
    )
    # Helpful feedback on importance 1.0 leaves it at 1.0.
    response = await memory_stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=memory.id, helpful=True)
    )
    assert response.memory.importance == 1.0 and response.memory.version == 4
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory.id))
    assert got.HasField("last_access_time")
    assert await _revisions(memory_stub, memory.id) == []
    assert await _count(database_url, "SELECT count(*) FROM memory_revisions") == 0


async def test_feedback_keeps_the_importance_it_moved(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user, importance=0.5)
    response = await memory_stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=memory.id, rating=5)
    )
    assert response.memory.importance == pytest.approx(0.6)
    (revision,) = await _revisions(memory_stub, memory.id)
    assert (revision.version, revision.importance) == (1, 0.5)


async def test_pages_of_one_walk_every_revision_once(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user, "v1")
    for n in (2, 3, 4):
        await _update(memory_stub, memory.id, ["content"], content=f"v{n}")
    everything = await _revisions(memory_stub, memory.id)
    assert [r.content for r in everything] == ["v3", "v2", "v1"]

    seen: list[memory_pb2.MemoryRevision] = []
    token = ""
    for _ in range(4):
        page = await memory_stub.ListMemoryRevisions(
            memory_service_pb2.ListMemoryRevisionsRequest(
                memory_id=memory.id, page_size=1, page_token=token
            )
        )
        seen.extend(page.revisions)
        token = page.next_page_token
        if not token:
            break
    assert seen == everything
    assert token == ""
    # Two pages of two and one: the last page says it is the last.
    page = await memory_stub.ListMemoryRevisions(
        memory_service_pb2.ListMemoryRevisionsRequest(memory_id=memory.id, page_size=2)
    )
    assert len(page.revisions) == 2 and page.next_page_token
    rest = await memory_stub.ListMemoryRevisions(
        memory_service_pb2.ListMemoryRevisionsRequest(
            memory_id=memory.id, page_size=2, page_token=page.next_page_token
        )
    )
    assert [r.content for r in rest.revisions] == ["v1"] and rest.next_page_token == ""

    # A token continues only the memory it came from.
    other = await store(memory_stub, user, "other")
    error = await _error(
        memory_stub.ListMemoryRevisions(
            memory_service_pb2.ListMemoryRevisionsRequest(
                memory_id=other.id, page_token=page.next_page_token
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["page_token"]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"memory_id": 0}, "memory_id"),
        ({"memory_id": -3}, "memory_id"),
        ({"memory_id": 1, "page_size": -1}, "page_size"),
        ({"memory_id": 1, "page_token": "not a token"}, "page_token"),
        ({"memory_id": 1, "page_token": "x" * 513}, "page_token"),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    memory_stub, request_fields, field
) -> None:
    error = await _error(
        memory_stub.ListMemoryRevisions(
            memory_service_pb2.ListMemoryRevisionsRequest(**request_fields)
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [field]


async def test_a_missing_or_deleted_memory_is_not_found_and_its_revisions_are_gone(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user)
    await _update(memory_stub, memory.id, ["content"], content="changed")
    kept = "SELECT count(*) FROM memory_revisions WHERE memory_id = $1"
    assert await _count(database_url, kept, memory.id) == 1

    await memory_stub.DeleteMemory(memory_service_pb2.DeleteMemoryRequest(id=memory.id))
    for memory_id in (memory.id, memory.id + 10_000):
        error = await _error(
            memory_stub.ListMemoryRevisions(
                memory_service_pb2.ListMemoryRevisionsRequest(memory_id=memory_id)
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert error.details() == f"memory {memory_id} not found"
    assert await _count(database_url, kept, memory.id) == 0


async def test_a_change_in_plain_sql_is_kept_as_the_databases(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user, "before")
    conn = await asyncpg.connect(database_url)  # the owner, outside the service
    try:
        await conn.execute("UPDATE user_memories SET content = 'after' WHERE id = $1", memory.id)
    finally:
        await conn.close()
    (revision,) = await _revisions(memory_stub, memory.id)
    assert (revision.content, revision.version, revision.changed_by) == ("before", 1, "database")


async def test_row_level_security_shows_revisions_to_their_user_only(
    memory_stub, admin_stub, app_url
) -> None:
    alice, bob = await register_user(admin_stub), await register_user(admin_stub)
    memory = await store(memory_stub, alice)
    await _update(memory_stub, memory.id, ["content"], content="changed")
    conn = await asyncpg.connect(app_url)  # the service role, no WHERE clause to help
    seen: dict[str, tuple[int, int]] = {}
    try:
        for acting in (alice, bob, "", "*"):
            tx = conn.transaction()
            await tx.start()
            await conn.execute("SELECT set_config('faraday.acting_user', $1, true)", acting)
            count = await conn.fetchval("SELECT count(*) FROM memory_revisions")
            deleted = await conn.fetch("DELETE FROM memory_revisions RETURNING id")
            seen[acting] = (count, len(deleted))
            await tx.rollback()
    finally:
        await conn.close()
    assert seen == {alice: (1, 1), bob: (0, 0), "": (0, 0), "*": (0, 0)}


async def test_a_revision_is_its_memorys_users(memory_stub, admin_stub, database_url) -> None:
    """The composite foreign key: no revision can name another user's memory."""
    alice, bob = await register_user(admin_stub), await register_user(admin_stub)
    memory = await store(memory_stub, alice)
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO memory_revisions (memory_id, user_id, version, content, importance,"
                " category, tags, metadata, changed_by)"
                " VALUES ($1, $2, 1, 'x', 0.5, 'c', '{}', '{}', 'forged')",
                memory.id,
                uuid.UUID(bob),
            )
    finally:
        await conn.close()
