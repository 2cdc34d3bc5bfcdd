"""MemoryService CRUD, listing, feedback and interactions over a real channel."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import memory_pb2, memory_service_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2

from memory_service.server import RunningServer
from tests.rpc.helpers import error_reasons, field_violations, register_user, set_user_active
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_store_then_get_round_trips_every_field(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    expire = timestamp_pb2.Timestamp()
    expire.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    stored = await store(
        memory_stub,
        user,
        "Class 7B meets in room 12.",
        category="class_context",
        importance=0.8,
        tags=["grade-7", "room", "grade-7"],
        context={"class": "7B"},
        source="chat",
        confidence=0.9,
        expire_time=expire,
    )
    assert stored.id > 0 and stored.version == 1 and stored.etag
    assert stored.tags == ["grade-7", "room"]  # duplicates removed, order kept
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
    assert got == stored
    assert got.context["class"] == "7B" and got.importance == pytest.approx(0.8)
    assert got.expire_time.seconds == expire.seconds
    assert not got.HasField("last_access_time")


async def test_importance_defaults_to_one_half(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    assert (await store(memory_stub, user)).importance == 0.5


async def test_store_for_unknown_user_is_not_found(memory_stub) -> None:
    error = await _error(store(memory_stub, str(uuid.uuid4())))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "user" in (error.details() or "")


@pytest.mark.parametrize(
    ("memory", "field"),
    [
        (memory_pb2.Memory(content="x", category="c"), "memory.user_id"),
        (memory_pb2.Memory(user_id="not-a-uuid", content="x", category="c"), "memory.user_id"),
        (memory_pb2.Memory(user_id="{user}", category="c"), "memory.content"),
        (memory_pb2.Memory(user_id="{user}", content="   ", category="c"), "memory.content"),
        (memory_pb2.Memory(user_id="{user}", content="a\x00b", category="c"), "memory.content"),
        (memory_pb2.Memory(user_id="{user}", content="x" * 8001, category="c"), "memory.content"),
        (memory_pb2.Memory(user_id="{user}", content="x"), "memory.category"),
        (
            memory_pb2.Memory(user_id="{user}", content="x", category="c", importance=1.5),
            "memory.importance",
        ),
        (
            memory_pb2.Memory(user_id="{user}", content="x", category="c", importance=math.nan),
            "memory.importance",
        ),
        (
            memory_pb2.Memory(user_id="{user}", content="x", category="c", confidence=-0.1),
            "memory.confidence",
        ),
        (
            memory_pb2.Memory(user_id="{user}", content="x", category="c", tags=["t"] * 33),
            "memory.tags",
        ),
        (
            memory_pb2.Memory(user_id="{user}", content="x", category="c", tags=["ok", ""]),
            "memory.tags[1]",
        ),
        (
            memory_pb2.Memory(user_id="{user}", content="x", category="c", assistant_profile_id=-4),
            "memory.assistant_profile_id",
        ),
    ],
)
async def test_bad_memory_is_invalid_argument_naming_the_field(
    memory_stub, admin_stub, database_url, memory, field
) -> None:
    user = await register_user(admin_stub)
    if memory.user_id == "{user}":
        memory.user_id = user
    error = await _error(
        memory_stub.StoreMemory(memory_service_pb2.StoreMemoryRequest(memory=memory))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM user_memories") == 0
    finally:
        await conn.close()


async def test_oversized_or_nan_context_is_rejected(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    error = await _error(store(memory_stub, user, context={"notes": "x" * 20000}))
    assert field_violations(error) == ["memory.context"]
    error = await _error(store(memory_stub, user, context={"score": math.inf}))
    assert field_violations(error) == ["memory.context"]


async def test_expire_time_in_the_past_is_rejected(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    error = await _error(store(memory_stub, user, expire_time=past))
    assert field_violations(error) == ["memory.expire_time"]


async def test_get_missing_memory_is_not_found_and_zero_id_invalid(memory_stub) -> None:
    error = await _error(memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=999)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await _error(memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["id"]


def _update(memory: memory_pb2.Memory, *paths: str) -> memory_service_pb2.UpdateMemoryRequest:
    return memory_service_pb2.UpdateMemoryRequest(
        memory=memory, update_mask=field_mask_pb2.FieldMask(paths=list(paths))
    )


async def test_update_changes_only_masked_fields_and_bumps_version(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user, "old", importance=0.3, tags=["a"])
    change = memory_pb2.Memory(
        id=stored.id, content="new", importance=0.9, tags=["b"], etag=stored.etag
    )
    updated = await memory_stub.UpdateMemory(_update(change, "content", "tags"))
    assert updated.content == "new" and list(updated.tags) == ["b"]
    assert updated.importance == pytest.approx(0.3)  # not in the mask
    assert updated.version == 2 and updated.etag != stored.etag
    assert updated.update_time.ToDatetime() >= stored.update_time.ToDatetime()
    interactions = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            memory_id=stored.id, type=memory_pb2.INTERACTION_TYPE_UPDATE
        )
    )
    assert [list(i.context["paths"]) for i in interactions.interactions] == [["content", "tags"]]


async def test_stale_etag_aborts_and_leaves_the_memory_alone(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user, "v1")
    await memory_stub.UpdateMemory(
        _update(memory_pb2.Memory(id=stored.id, content="v2", etag=stored.etag), "content")
    )
    error = await _error(
        memory_stub.UpdateMemory(
            _update(memory_pb2.Memory(id=stored.id, content="v3", etag=stored.etag), "content")
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
    assert got.content == "v2"
    error = await _error(
        memory_stub.DeleteMemory(
            memory_service_pb2.DeleteMemoryRequest(id=stored.id, etag=stored.etag)
        )
    )
    assert error.code() == grpc.StatusCode.ABORTED


async def test_update_rejects_bad_masks_and_values(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user)
    for mask, field in (
        (["user_id"], "update_mask"),
        ([], "update_mask"),
        (["importance"], "memory.importance"),
    ):
        error = await _error(
            memory_stub.UpdateMemory(
                _update(memory_pb2.Memory(id=stored.id, importance=2.0), *mask)
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(error)
    error = await _error(
        memory_stub.UpdateMemory(
            _update(memory_pb2.Memory(id=stored.id + 100, content="x"), "content")
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = await _error(
        memory_stub.UpdateMemory(
            _update(memory_pb2.Memory(id=stored.id, content="x", etag="bogus"), "content")
        )
    )
    assert field_violations(error) == ["memory.etag"]


async def test_delete_removes_memory_and_its_interactions(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user)
    await memory_stub.DeleteMemory(memory_service_pb2.DeleteMemoryRequest(id=stored.id))
    for call in (
        memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id)),
        memory_stub.DeleteMemory(memory_service_pb2.DeleteMemoryRequest(id=stored.id)),
    ):
        assert (await _error(call)).code() == grpc.StatusCode.NOT_FOUND
    left = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(memory_id=stored.id)
    )
    assert not left.interactions


async def test_list_pages_through_everything_once_newest_first(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    other = await register_user(admin_stub)
    ids = [
        (await store(memory_stub, user, f"m{i}", tags=["t"] if i % 2 else [])).id for i in range(7)
    ]
    await store(memory_stub, other, "someone else's")
    seen, token, pages = [], "", 0
    while True:
        page = await memory_stub.ListMemories(
            memory_service_pb2.ListMemoriesRequest(user_id=user, page_size=3, page_token=token)
        )
        seen += [m.id for m in page.memories]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(ids, reverse=True) and pages == 3
    tagged = await memory_stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user, tags=["t"])
    )
    assert len(tagged.memories) == 3


async def test_list_rejects_foreign_tokens_and_negative_sizes(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    for i in range(3):
        await store(memory_stub, user, f"m{i}")
    page = await memory_stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user, page_size=1)
    )
    for request, field in (
        (
            memory_service_pb2.ListMemoriesRequest(
                user_id=user, categories=["other"], page_token=page.next_page_token
            ),
            "page_token",
        ),
        (memory_service_pb2.ListMemoriesRequest(user_id=user, page_token="garbage!"), "page_token"),
        (memory_service_pb2.ListMemoriesRequest(user_id=user, page_size=-1), "page_size"),
        (memory_service_pb2.ListMemoriesRequest(), "user_id"),
    ):
        error = await _error(memory_stub.ListMemories(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error) == [field]


@pytest.mark.parametrize(
    ("signal", "expected"),
    [
        ({"helpful": True}, 0.5 + 0.2 * 0.5),
        ({"helpful": False}, 0.5 - 0.2 * 0.5),
        ({"rating": 5}, 0.5 + 0.2 * (1.0 - 0.5)),
        ({"rating": 1}, 0.5 + 0.2 * (0.0 - 0.5)),
        ({"rating": 3}, 0.5),
        ({"rating": 4}, 0.5 + 0.2 * (0.75 - 0.5)),
    ],
)
async def test_feedback_moves_importance_by_the_documented_rule(
    memory_stub, admin_stub, signal, expected
) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user, importance=0.5)
    response = await memory_stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, comment="useful", **signal)
    )
    assert response.memory.importance == pytest.approx(expected)
    assert response.memory.version == 2
    feedback = response.interaction.feedback
    assert feedback["importance_before"] == pytest.approx(0.5)
    assert feedback["importance_after"] == pytest.approx(expected)
    assert feedback["comment"] == "useful"
    assert response.interaction.type == memory_pb2.INTERACTION_TYPE_FEEDBACK


async def test_repeated_feedback_stays_within_bounds(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user, importance=0.9)
    for _ in range(40):
        response = await memory_stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, helpful=True)
        )
    assert 0.999 < response.memory.importance <= 1.0
    for _ in range(60):
        response = await memory_stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, rating=1)
        )
    assert 0.0 <= response.memory.importance < 0.001


async def test_bad_feedback_is_rejected(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user)
    for request, code, field in (
        (
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id),
            grpc.StatusCode.INVALID_ARGUMENT,
            "signal",
        ),
        (
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, rating=6),
            grpc.StatusCode.INVALID_ARGUMENT,
            "rating",
        ),
        (
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, rating=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "rating",
        ),
        (
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id + 1, helpful=True),
            grpc.StatusCode.NOT_FOUND,
            None,
        ),
    ):
        error = await _error(memory_stub.RecordFeedback(request))
        assert error.code() == code
        if field:
            assert field_violations(error) == [field]


async def test_list_interactions_filters_and_pages(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    first = await store(memory_stub, user, "one")
    second = await store(memory_stub, user, "two")
    await memory_stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=first.id, helpful=True)
    )
    everything = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=user)
    )
    assert [i.type for i in everything.interactions] == [
        memory_pb2.INTERACTION_TYPE_FEEDBACK,
        memory_pb2.INTERACTION_TYPE_STORE,
        memory_pb2.INTERACTION_TYPE_STORE,
    ]
    stores = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            user_id=user, type=memory_pb2.INTERACTION_TYPE_STORE, page_size=1
        )
    )
    assert [i.memory_id for i in stores.interactions] == [second.id]
    rest = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            user_id=user,
            type=memory_pb2.INTERACTION_TYPE_STORE,
            page_size=1,
            page_token=stores.next_page_token,
        )
    )
    assert [i.memory_id for i in rest.interactions] == [first.id]
    assert rest.next_page_token == ""
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    none = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=user, start_time=future)
    )
    assert not none.interactions
    error = await _error(memory_stub.ListInteractions(memory_service_pb2.ListInteractionsRequest()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sweep_deletes_every_users_expired_memories_as_the_platform_role(
    memory_stub, admin_stub, server: RunningServer, database_url
) -> None:
    users = [await register_user(admin_stub) for _ in range(2)]
    doomed = [(await store(memory_stub, user, "temporary")).id for user in users]
    kept = [(await store(memory_stub, user, "permanent")).id for user in users]
    owner = await asyncpg.connect(database_url)
    try:
        await owner.execute(
            "UPDATE user_memories SET expires_at = now() - interval '1 second' WHERE id = ANY($1)",
            doomed,
        )
        # The service role may not delete at all: the sweep must not need it.
        await owner.execute("REVOKE DELETE ON user_memories, idempotency_keys FROM faraday_app")
        try:
            assert await server.memories.sweep_expired(batch_size=1) == 2
        finally:
            await owner.execute("GRANT DELETE ON user_memories, idempotency_keys TO faraday_app")
        left = await owner.fetch("SELECT id FROM user_memories WHERE id = ANY($1)", doomed + kept)
    finally:
        await owner.close()
    assert sorted(r["id"] for r in left) == sorted(kept)


async def test_sweep_deletes_expired_memories(
    memory_stub, admin_stub, server: RunningServer, database_url
) -> None:
    user = await register_user(admin_stub)
    soon = timestamp_pb2.Timestamp()
    soon.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    doomed = await store(memory_stub, user, "temporary", expire_time=soon)
    kept = await store(memory_stub, user, "permanent")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE user_memories SET expires_at = now() - interval '1 second' WHERE id = $1",
            doomed.id,
        )
    finally:
        await conn.close()
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert [m.id for m in listed.memories] == [kept.id]  # expired: hidden before the sweep
    assert await server.memories.sweep_expired(batch_size=1) == 1
    error = await _error(memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=doomed.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=kept.id))


# --- Inactive users: their memories are read-only -----------------------------


async def _inactive_user_with_a_memory(
    memory_stub, admin_stub
) -> tuple[str, str, memory_pb2.Memory]:
    """A user with one memory (stored while active), then deactivated."""
    email = f"inactive-{uuid.uuid4().hex[:8]}@school.example.org"
    user = await register_user(admin_stub, email)
    stored = await store(memory_stub, user, "Prefers bullet points.", importance=0.5)
    await set_user_active(admin_stub, user, email, active=False)
    return user, email, stored


async def _rows_of(database_url: str, user: str) -> dict[str, int]:
    """What the database holds for the user, counted as the schema owner."""
    owner = await asyncpg.connect(database_url)
    try:
        return {
            table: await owner.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", user)
            for table in ("user_memories", "memory_interactions", "idempotency_keys")
        }
    finally:
        await owner.close()


async def _inactive(call: object) -> None:
    error = await _error(call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert error_reasons(error) == ["USER_INACTIVE"]
    assert "is inactive" in (error.details() or "")


async def test_store_for_an_inactive_user_is_failed_precondition_and_writes_nothing(
    memory_stub, admin_stub, database_url
) -> None:
    user, email, _ = await _inactive_user_with_a_memory(memory_stub, admin_stub)
    before = await _rows_of(database_url, user)
    assert before == {"user_memories": 1, "memory_interactions": 1, "idempotency_keys": 0}

    await _inactive(store(memory_stub, user, "Teaches 7B on Mondays."))
    await _inactive(store(memory_stub, user, "Teaches 7B on Mondays.", request_id="once-1"))
    assert await _rows_of(database_url, user) == before

    # Reactivated, the same request id stores: the refused call used nothing up.
    await set_user_active(admin_stub, user, email, active=True)
    stored = await store(memory_stub, user, "Teaches 7B on Mondays.", request_id="once-1")
    assert stored.content == "Teaches 7B on Mondays."
    assert await _rows_of(database_url, user) == {
        "user_memories": 2,
        "memory_interactions": 2,
        "idempotency_keys": 1,
    }


async def test_store_for_an_unknown_user_is_still_not_found_with_a_request_id(
    memory_stub,
) -> None:
    error = await _error(store(memory_stub, str(uuid.uuid4()), request_id="nobody-1"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "user" in (error.details() or "")


async def test_an_inactive_users_memories_stay_readable(memory_stub, admin_stub) -> None:
    user, _, stored = await _inactive_user_with_a_memory(memory_stub, admin_stub)
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
    assert got.content == stored.content
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert [m.id for m in listed.memories] == [stored.id]
    recalled = await memory_stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query="bullet points")
    )
    assert [r.memory.id for r in recalled.memories] == [stored.id]
    logged = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=user)
    )
    assert [i.type for i in logged.interactions] == [
        memory_pb2.INTERACTION_TYPE_RECALL,  # recall's log is part of reading
        memory_pb2.INTERACTION_TYPE_STORE,
    ]


async def test_update_and_feedback_for_an_inactive_user_change_nothing(
    memory_stub, admin_stub, database_url
) -> None:
    user, email, stored = await _inactive_user_with_a_memory(memory_stub, admin_stub)
    before = await _rows_of(database_url, user)

    change = memory_pb2.Memory(id=stored.id, content="changed", etag=stored.etag)
    await _inactive(memory_stub.UpdateMemory(_update(change, "content")))
    # A stale etag too: what blocks the write is the user, which re-reading
    # would not fix, so FAILED_PRECONDITION and not ABORTED.
    stale = memory_pb2.Memory(id=stored.id, content="changed", etag="1")
    await _inactive(memory_stub.UpdateMemory(_update(stale, "content")))
    await _inactive(
        memory_stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, helpful=True)
        )
    )
    await _inactive(
        memory_stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(
                memory_id=stored.id, rating=5, request_id="fb-1"
            )
        )
    )
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
    assert got == stored  # content, importance, version, etag: all as stored
    assert await _rows_of(database_url, user) == before

    # NOT_FOUND still wins for a memory that is not there.
    missing = await _error(
        memory_stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id + 1000, helpful=True)
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    # Reactivated: the same feedback request id works (nothing was used up).
    await set_user_active(admin_stub, user, email, active=True)
    response = await memory_stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, rating=5, request_id="fb-1")
    )
    assert response.memory.importance == pytest.approx(0.5 + 0.2 * (1.0 - 0.5))


async def test_an_inactive_users_memory_can_still_be_deleted(memory_stub, admin_stub) -> None:
    _, _, stored = await _inactive_user_with_a_memory(memory_stub, admin_stub)
    await memory_stub.DeleteMemory(
        memory_service_pb2.DeleteMemoryRequest(id=stored.id, etag=stored.etag)
    )
    gone = await _error(memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id)))
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_stores_racing_a_deactivation_are_whole_or_nothing(
    memory_stub, admin_stub, database_url
) -> None:
    email = f"racing-{uuid.uuid4().hex[:8]}@school.example.org"
    user = await register_user(admin_stub, email)

    async def one(i: int) -> bool:
        """Store one memory; True if stored, False if refused as inactive."""
        try:
            await store(memory_stub, user, f"fact {i}", request_id=f"race-{i}" if i % 2 else "")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
            return False
        return True

    assert await one(0) and await one(1)
    # The deactivation is sent among more stores, which queue for the test
    # server's few connections: some run before it, some after, some beside.
    calls = [one(i) for i in range(2, 60)]
    calls.insert(20, set_user_active(admin_stub, user, email, active=False))
    outcomes = [True, True, *await asyncio.gather(*calls)]
    del outcomes[22]
    stored = [i for i, ok in enumerate(outcomes) if ok]
    # Every acknowledged store is whole (memory, interaction, request key),
    # and every refused one left nothing behind.
    assert await _rows_of(database_url, user) == {
        "user_memories": len(stored),
        "memory_interactions": len(stored),
        "idempotency_keys": sum(1 for i in stored if i % 2),
    }
    # Once the deactivation is acknowledged, no store gets through.
    assert not any([await one(i) for i in range(60, 70)])
