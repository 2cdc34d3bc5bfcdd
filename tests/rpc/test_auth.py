"""Trust: authentication, scopes, and every RPC tried as the wrong caller.

A second server runs with auth configured (service tokens and HS256 user
JWTs), on the same database as the service role, so row-level security is
live underneath. The wrong-caller test prints how many attempts it made and
how many leaked anything.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memory_service.auth import token_hash
from memory_service.server import RunningServer, start
from memory_service.storage import migrate
from memory_service.storage.lessons import SEARCH_CANDIDATES_PER_WORD
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = "test-secret-that-is-long-enough-for-hs256!!"
ISSUER, AUDIENCE = "https://platform.faraday.example", "faraday-memory"
TOKENS = {
    "admin": ["memories:read", "memories:write", "lessons:read", "admin"],
    "reader": ["memories:read", "lessons:read"],
    "backend": ["memories:read", "memories:write", "lessons:read"],
}


def user_jwt(user_id: str, **overrides: object) -> str:
    claims = {"sub": user_id, "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class AuthWorld:
    server: RunningServer
    memory: memory_service_pb2_grpc.MemoryServiceStub
    lesson: lesson_service_pb2_grpc.LessonServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    health: health_pb2_grpc.HealthStub
    tokens: dict[str, str]
    limited_profile: int


@pytest.fixture(scope="session")
async def _auth_server(
    app_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel, dict[str, str], Path]]:
    tokens = {name: f"fmt_{name}_{uuid.uuid4().hex}" for name in TOKENS}
    path = tmp_path_factory.mktemp("auth") / "tokens.json"
    entries = [
        {"name": name, "sha256": token_hash(tokens[name]), "scopes": scopes}
        for name, scopes in TOKENS.items()
    ]
    path.write_text(json.dumps({"tokens": entries}))
    settings = TEST_SETTINGS.with_overrides(
        service_tokens_file=path, jwt_hs256_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    running = await start(settings, app_url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield running, ch, tokens, path
    await running.stop(1.0)


@pytest.fixture
async def world(_auth_server) -> AuthWorld:
    running, ch, tokens, _ = _auth_server
    admin = admin_service_pb2_grpc.AdminServiceStub(ch)
    profile = await admin.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name="Limited", model_version="m", is_active=True)
        ),
        metadata=bearer(tokens["admin"]),
    )
    return AuthWorld(
        running,
        memory_service_pb2_grpc.MemoryServiceStub(ch),
        lesson_service_pb2_grpc.LessonServiceStub(ch),
        admin,
        health_pb2_grpc.HealthStub(ch),
        tokens,
        profile.id,
    )


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _user(world: AuthWorld, name: str) -> str:
    user = await world.admin.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(email=f"{name}-{uuid.uuid4().hex[:6]}@school.example.org")
        ),
        metadata=bearer(world.tokens["admin"]),
    )
    return user.id


async def _memory(
    world: AuthWorld, user: str, content: str, token: str, **fields
) -> memory_pb2.Memory:
    return await world.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(user_id=user, content=content, category="fact", **fields)
        ),
        metadata=bearer(token),
    )


async def test_health_and_reflection_need_no_credentials(world: AuthWorld) -> None:
    response = await world.health.Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-known-token",
        "Bearer " + user_jwt(str(uuid.uuid4()), exp=int(time.time()) - 3600),
        "Bearer " + user_jwt(str(uuid.uuid4()), aud="someone-else"),
        "Bearer " + user_jwt(str(uuid.uuid4()), iss="https://evil.example"),
        "Bearer " + user_jwt(str(uuid.uuid4()), exp=None),
        "Bearer " + user_jwt("not-a-uuid"),
        "Bearer "
        + jwt.encode({"sub": str(uuid.uuid4()), "exp": 2**31}, "wrong-secret" * 4, "HS256"),
        "Bearer "
        + jwt.encode(
            {"sub": str(uuid.uuid4()), "exp": 2**31, "iss": ISSUER, "aud": AUDIENCE}, None, "none"
        ),
    ],
)
async def test_bad_credentials_are_unauthenticated(world: AuthWorld, authorization) -> None:
    metadata = (("authorization", authorization),) if authorization else None
    calls = [
        world.memory.GetMemory(memory_service_pb2.GetMemoryRequest(id=1), metadata=metadata),
        world.lesson.GetLesson(lesson_service_pb2.GetLessonRequest(id=1), metadata=metadata),
        world.admin.DeleteLesson(admin_service_pb2.DeleteLessonRequest(id=1), metadata=metadata),
    ]
    for call in calls:
        assert await _code(call) == grpc.StatusCode.UNAUTHENTICATED


async def test_scopes_are_enforced(world: AuthWorld) -> None:
    user = await _user(world, "scoped")
    store = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(user_id=user, content="x", category="fact")
    )
    reader = bearer(world.tokens["reader"])
    assert await _code(world.memory.StoreMemory(store, metadata=reader)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    recall = memory_service_pb2.RecallMemoriesRequest(user_id=user)
    assert await _code(world.memory.RecallMemories(recall, metadata=reader)) == grpc.StatusCode.OK
    # A user token never holds `admin`, whatever its scope claim says.
    for token in (user_jwt(user), user_jwt(user, scope="admin memories:read")):
        upsert = admin_service_pb2.UpsertUserRequest(user=registry_pb2.User(email="x@y.example"))
        assert await _code(world.admin.UpsertUser(upsert, metadata=bearer(token))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
    read_only = bearer(user_jwt(user, scope="memories:read"))
    assert await _code(world.memory.StoreMemory(store, metadata=read_only)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await _code(world.memory.StoreMemory(store, metadata=bearer(user_jwt(user)))) == (
        grpc.StatusCode.OK
    )


async def test_search_candidates_are_only_lessons_the_user_may_see(
    world: AuthWorld, database_url
) -> None:
    """Hidden drafts neither show nor crowd a visible lesson out of the candidate cap."""
    admin = bearer(world.tokens["admin"])
    alice, bob, carol = [await _user(world, name) for name in ("alice", "bob", "carol")]
    conn = await asyncpg.connect(database_url)
    try:
        # Bob's drafts say "zebra" in the title, the heaviest weight: each
        # outranks Carol's lesson, which says it once in the text.
        await conn.execute(
            "INSERT INTO lessons (title, user_id)"
            " SELECT 'Zebra zebra stripes ' || n, $1 FROM generate_series(1, $2) n",
            uuid.UUID(bob),
            SEARCH_CANDIDATES_PER_WORD + 10,
        )
    finally:
        await conn.close()
    lesson = lesson_pb2.Lesson(
        title="Savanna animals", user_id=carol, status=lesson_pb2.LESSON_STATUS_PUBLISHED
    )
    lesson.lesson_data.update({"text": "A zebra has stripes."})
    carols = await world.admin.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(lesson=lesson), metadata=admin
    )
    as_alice = bearer(user_jwt(alice))
    for query in ("zebra", "zebra stripes", "zebra or lion"):
        found = await world.lesson.SearchLessons(
            lesson_service_pb2.SearchLessonsRequest(query=query), metadata=as_alice
        )
        assert [m.lesson.id for m in found.matches] == [carols.id], query
    # Bob sees his own drafts first, as a service token does.
    found = await world.lesson.SearchLessons(
        lesson_service_pb2.SearchLessonsRequest(query="zebra", page_size=5),
        metadata=bearer(user_jwt(bob)),
    )
    assert len(found.matches) == 5 and carols.id not in {m.lesson.id for m in found.matches}


async def test_every_rpc_as_the_wrong_user_leaks_nothing(world: AuthWorld, database_url) -> None:
    admin = bearer(world.tokens["admin"])
    alice, bob = await _user(world, "alice"), await _user(world, "bob")
    as_alice = bearer(user_jwt(alice))
    bobs = await _memory(world, bob, "Bob's secret fractions note", world.tokens["admin"])
    await world.memory.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=bob), metadata=admin
    )
    draft = await world.admin.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(title="Bob's draft fractions", user_id=bob)
        ),
        metadata=admin,
    )
    published = await world.admin.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(
                title="Bob's published fractions",
                user_id=bob,
                status=lesson_pb2.LESSON_STATUS_PUBLISHED,
            )
        ),
        metadata=admin,
    )
    missing_id = bobs.id + 10_000  # a memory id that exists for nobody
    mask = field_mask_pb2.FieldMask(paths=["content"])
    attempts: list[tuple[str, object, object]] = [
        # (name, call naming Bob's data, same call naming nothing that exists)
        (
            "StoreMemory",
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(user_id=bob, content="x", category="c")
            ),
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(user_id=str(uuid.uuid4()), content="x", category="c")
            ),
        ),
        (
            "GetMemory",
            memory_service_pb2.GetMemoryRequest(id=bobs.id),
            memory_service_pb2.GetMemoryRequest(id=missing_id),
        ),
        (
            "UpdateMemory",
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=bobs.id, content="pwned"), update_mask=mask
            ),
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=missing_id, content="pwned"), update_mask=mask
            ),
        ),
        (
            "UpdateMemory",
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=bobs.id, content="pwned", etag='W/"99"'),
                update_mask=mask,
            ),
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=missing_id, content="pwned", etag='W/"99"'),
                update_mask=mask,
            ),
        ),
        (
            "DeleteMemory",
            memory_service_pb2.DeleteMemoryRequest(id=bobs.id),
            memory_service_pb2.DeleteMemoryRequest(id=missing_id),
        ),
        (
            "DeleteMemory",
            memory_service_pb2.DeleteMemoryRequest(id=bobs.id, etag='W/"99"'),
            memory_service_pb2.DeleteMemoryRequest(id=missing_id, etag='W/"99"'),
        ),
        (
            "ListMemories",
            memory_service_pb2.ListMemoriesRequest(user_id=bob),
            memory_service_pb2.ListMemoriesRequest(user_id=str(uuid.uuid4())),
        ),
        (
            "RecallMemories",
            memory_service_pb2.RecallMemoriesRequest(user_id=bob, query="secret"),
            memory_service_pb2.RecallMemoriesRequest(user_id=str(uuid.uuid4()), query="secret"),
        ),
        (
            "RecordFeedback",
            memory_service_pb2.RecordFeedbackRequest(memory_id=bobs.id, rating=1),
            memory_service_pb2.RecordFeedbackRequest(memory_id=missing_id, rating=1),
        ),
        (
            "RecordFeedback",
            memory_service_pb2.RecordFeedbackRequest(memory_id=bobs.id, rating=1, request_id="r-1"),
            memory_service_pb2.RecordFeedbackRequest(
                memory_id=missing_id, rating=1, request_id="r-2"
            ),
        ),
        (
            "ListInteractions",
            memory_service_pb2.ListInteractionsRequest(user_id=bob),
            memory_service_pb2.ListInteractionsRequest(user_id=str(uuid.uuid4())),
        ),
        (
            "ListMemoryRevisions",
            memory_service_pb2.ListMemoryRevisionsRequest(memory_id=bobs.id),
            memory_service_pb2.ListMemoryRevisionsRequest(memory_id=missing_id),
        ),
        (
            "GetLesson",
            lesson_service_pb2.GetLessonRequest(id=draft.id),
            lesson_service_pb2.GetLessonRequest(id=draft.id + 10_000),
        ),
    ]
    made = leaks = 0
    for name, bobs_request, nobodys_request in attempts:
        method = getattr(world.memory if hasattr(world.memory, name) else world.lesson, name)
        results = []
        for request in (bobs_request, nobodys_request):
            try:
                await method(request, metadata=as_alice)
                results.append(("OK", ""))
            except grpc.aio.AioRpcError as error:
                results.append(
                    (
                        error.code().name,
                        error.details()
                        .replace(str(bobs.id), "ID")
                        .replace(str(missing_id), "ID")
                        .replace(str(draft.id), "LID")
                        .replace(str(draft.id + 10_000), "LID"),
                    )
                )
        made += 1
        # Bob's data must look exactly like data that does not exist.
        if results[0][0] != "NOT_FOUND" or results[0][0] != results[1][0]:
            leaks += 1
            print(f"LEAK? {name}: {results}")
    # Lists scoped by the caller return nothing of Bob's rather than an error.
    only_alice = await world.memory.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(memory_id=bobs.id), metadata=as_alice
    )
    made += 1
    leaks += bool(only_alice.interactions)
    lessons = await world.lesson.ListLessons(
        lesson_service_pb2.ListLessonsRequest(user_id=bob), metadata=as_alice
    )
    found = await world.lesson.SearchLessons(
        lesson_service_pb2.SearchLessonsRequest(query="fractions"), metadata=as_alice
    )
    made += 2
    leaks += [lesson.id for lesson in lessons.lessons] != [published.id]
    leaks += [m.lesson.id for m in found.matches] != [published.id]
    # Published lessons are everyone's (the documented policy).
    got = await world.lesson.GetLesson(
        lesson_service_pb2.GetLessonRequest(id=published.id), metadata=as_alice
    )
    assert got.title == "Bob's published fractions"
    # Admin RPCs are denied outright to a user token.
    for call in (
        world.admin.DeleteUserData(
            admin_service_pb2.DeleteUserDataRequest(user_id=bob), metadata=as_alice
        ),
        world.admin.DeleteLesson(
            admin_service_pb2.DeleteLessonRequest(id=draft.id), metadata=as_alice
        ),
    ):
        made += 1
        leaks += await _code(call) != grpc.StatusCode.PERMISSION_DENIED
    # Nothing of Bob's changed.
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT content, importance, version FROM user_memories WHERE id = $1", bobs.id
        )
        stored_for_bob = await conn.fetchval(
            "SELECT count(*) FROM user_memories WHERE user_id = $1", uuid.UUID(bob)
        )
    finally:
        await conn.close()
    assert (row["content"], row["version"], stored_for_bob) == (bobs.content, 1, 1)
    print(f"\nwrong-caller attempts: {made}, leaks found: {leaks}")
    assert leaks == 0


@dataclass
class Limited:
    """A second server whose only token is limited to the world's `Limited` profile."""

    memory: memory_service_pb2_grpc.MemoryServiceStub
    metadata: tuple[tuple[str, str]]
    profile: int
    other_profile: int


@pytest.fixture
async def limited(world: AuthWorld, tmp_path, app_url: str) -> AsyncIterator[Limited]:
    other = await world.admin.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name="Other", model_version="m", is_active=True)
        ),
        metadata=bearer(world.tokens["admin"]),
    )
    path = tmp_path / "limited.json"
    token = f"fmt_limited_{uuid.uuid4().hex}"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": "limited",
                        "sha256": token_hash(token),
                        "scopes": ["memories:read", "memories:write"],
                        "assistant_profile_ids": [world.limited_profile],
                    }
                ]
            }
        )
    )
    limited_server = await start(TEST_SETTINGS.with_overrides(service_tokens_file=path), app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{limited_server.port}") as ch:
            yield Limited(
                memory_service_pb2_grpc.MemoryServiceStub(ch),
                bearer(token),
                world.limited_profile,
                other.id,
            )
    finally:
        await limited_server.stop(0.5)


async def test_profile_limited_token_sees_only_its_profiles(
    world: AuthWorld, limited: Limited
) -> None:
    admin = world.tokens["admin"]
    user = await _user(world, "limited")
    stub, as_limited = limited.memory, limited.metadata
    mine = await _memory(world, user, "planner note", admin, assistant_profile_id=limited.profile)
    shared = await _memory(world, user, "shared note", admin)
    theirs = await _memory(
        world, user, "other note", admin, assistant_profile_id=limited.other_profile
    )
    store_other = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(
            user_id=user, content="x", category="c", assistant_profile_id=limited.other_profile
        )
    )
    assert await _code(stub.StoreMemory(store_other, metadata=as_limited)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    get_theirs = memory_service_pb2.GetMemoryRequest(id=theirs.id)
    assert await _code(stub.GetMemory(get_theirs, metadata=as_limited)) == (
        grpc.StatusCode.NOT_FOUND
    )
    recalled = await stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user), metadata=as_limited
    )
    assert {s.memory.id for s in recalled.memories} == {mine.id, shared.id}


async def test_revisions_name_the_authenticated_caller_and_are_seen_as_the_memory_is(
    world: AuthWorld, limited: Limited
) -> None:
    user = await _user(world, "revised")
    memory = await _memory(
        world, user, "v1", world.tokens["admin"], assistant_profile_id=limited.other_profile
    )
    mask = field_mask_pb2.FieldMask(paths=["content"])
    for content, metadata in (
        ("v2", bearer(world.tokens["backend"])),
        ("v3", bearer(user_jwt(user))),
    ):
        await world.memory.UpdateMemory(
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=memory.id, content=content), update_mask=mask
            ),
            metadata=metadata,
        )
    request = memory_service_pb2.ListMemoryRevisionsRequest(memory_id=memory.id)
    # `memories:read` is enough; the user reads its own memory's history.
    for metadata in (bearer(world.tokens["reader"]), bearer(user_jwt(user))):
        listed = await world.memory.ListMemoryRevisions(request, metadata=metadata)
        assert [(r.content, r.changed_by) for r in listed.revisions] == [
            ("v2", f"user:{user}"),
            ("v1", "service:backend"),
        ]
    # Another user, and a token limited to another profile: as if missing.
    assert await _code(
        world.memory.ListMemoryRevisions(
            request, metadata=bearer(user_jwt(await _user(world, "other")))
        )
    ) == (grpc.StatusCode.NOT_FOUND)
    assert await _code(limited.memory.ListMemoryRevisions(request, metadata=limited.metadata)) == (
        grpc.StatusCode.NOT_FOUND
    )
    # Without `memories:read`: denied.
    no_read = bearer(user_jwt(user, scope="lessons:read"))
    assert await _code(world.memory.ListMemoryRevisions(request, metadata=no_read)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_shared_memories_are_read_only_for_profile_limited_tokens(
    world: AuthWorld, limited: Limited, database_url: str
) -> None:
    admin = world.tokens["admin"]
    user = await _user(world, "shared")
    stub, as_limited = limited.memory, limited.metadata
    shared = await _memory(world, user, "shared note", admin)
    mine = await _memory(world, user, "own note", admin, assistant_profile_id=limited.profile)

    def update(memory_id: int, profile: int, *paths: str):
        return memory_service_pb2.UpdateMemoryRequest(
            memory=memory_pb2.Memory(id=memory_id, importance=0.9, assistant_profile_id=profile),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        )

    writes = {
        "store shared": stub.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(user_id=user, content="new", category="c")
            ),
            metadata=as_limited,
        ),
        "update shared": stub.UpdateMemory(update(shared.id, 0, "importance"), metadata=as_limited),
        "move shared into own profile": stub.UpdateMemory(
            update(shared.id, limited.profile, "assistant_profile_id"), metadata=as_limited
        ),
        "move own into shared": stub.UpdateMemory(
            update(mine.id, 0, "assistant_profile_id"), metadata=as_limited
        ),
        "delete shared": stub.DeleteMemory(
            memory_service_pb2.DeleteMemoryRequest(id=shared.id), metadata=as_limited
        ),
        "feedback on shared": stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(memory_id=shared.id, helpful=True),
            metadata=as_limited,
        ),
        "feedback on shared, with a request id": stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(
                memory_id=shared.id, helpful=False, request_id="r-1"
            ),
            metadata=as_limited,
        ),
    }
    codes = {name: await _code(call) for name, call in writes.items()}
    assert codes == dict.fromkeys(writes, grpc.StatusCode.PERMISSION_DENIED)

    # Reading stays allowed; nothing changed; the own memory is writable.
    got = await stub.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=shared.id), metadata=as_limited
    )
    assert (got.version, got.importance, got.assistant_profile_id) == (1, shared.importance, 0)
    await stub.UpdateMemory(update(mine.id, 0, "importance"), metadata=as_limited)
    await stub.RecordFeedback(
        memory_service_pb2.RecordFeedbackRequest(memory_id=mine.id, helpful=True),
        metadata=as_limited,
    )
    # An unlimited token may change shared memories.
    await world.memory.UpdateMemory(update(shared.id, 0, "importance"), metadata=bearer(admin))

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, version FROM user_memories WHERE user_id = $1 ORDER BY id", uuid.UUID(user)
        )
    finally:
        await conn.close()
    assert [(r["id"], r["version"]) for r in rows] == [(shared.id, 2), (mine.id, 3)]


async def test_row_level_security_keeps_shared_memories_read_only(
    world: AuthWorld, app_url: str
) -> None:
    admin = world.tokens["admin"]
    user = await _user(world, "rls-shared")
    shared = await _memory(world, user, "shared note", admin)
    own = await _memory(world, user, "own note", admin, assistant_profile_id=world.limited_profile)
    conn = await asyncpg.connect(app_url)  # the service role, with no WHERE clause to help
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('faraday.acting_user', $1, true),"
                " set_config('faraday.acting_profiles', $2, true)",
                user,
                f"{{{world.limited_profile}}}",
            )
            seen = {r["id"] for r in await conn.fetch("SELECT id FROM user_memories")}
            assert seen == {shared.id, own.id}
            changed = await conn.fetch("UPDATE user_memories SET importance = 0.1 RETURNING id")
            assert [r["id"] for r in changed] == [own.id]
            deleted = await conn.fetch("DELETE FROM user_memories RETURNING id")
            assert [r["id"] for r in deleted] == [own.id]
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO user_memories (user_id, content, category)"
                    " VALUES ($1, 'sneaked in', 'c')",
                    uuid.UUID(user),
                )
    finally:
        await conn.close()


async def test_row_level_security_holds_without_a_where_clause(
    world: AuthWorld, app_url: str
) -> None:
    admin = world.tokens["admin"]
    alice, bob = await _user(world, "rls-a"), await _user(world, "rls-b")
    for user in (alice, bob):
        await _memory(world, user, f"memory of {user}", admin)
    counts: dict[tuple[str, str], set[str]] = {}
    for role, url in (("app", app_url), ("platform", migrate.platform_role_url(app_url))):
        conn = await asyncpg.connect(url)  # a role the server connects as
        try:
            for acting in (alice, "", "*"):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('faraday.acting_user', $1, true)", acting)
                    owners = await conn.fetch("SELECT DISTINCT user_id FROM user_memories")
                    counts[role, acting] = {str(r["user_id"]) for r in owners}
            # Transaction-local: the next transaction on this connection sees nothing.
            assert await conn.fetchval("SELECT count(*) FROM user_memories") == 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE audit_log SET outcome = 'OK'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM audit_log")
        finally:
            await conn.close()
    assert counts["app", alice] == counts["platform", alice] == {alice}
    assert counts["app", ""] == counts["platform", ""] == set()
    # The service role cannot switch itself to all users; only the platform role can.
    assert counts["app", "*"] == set()
    assert {alice, bob} <= counts["platform", "*"]


async def _role_of_a_call(world: AuthWorld, database_url: str, metadata: Any) -> str:
    """The database role a RecordFeedback call runs its transaction as.

    The memory's row is locked first, so the call's transaction waits for
    it where pg_stat_activity shows who it is.
    """
    memory = await _memory(world, await _user(world, "role"), "locked", world.tokens["admin"])
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM user_memories WHERE id = $1 FOR UPDATE", memory.id)
            call = asyncio.ensure_future(
                world.memory.RecordFeedback(
                    memory_service_pb2.RecordFeedbackRequest(memory_id=memory.id, helpful=True),
                    metadata=metadata(memory.user_id),
                )
            )
            deadline = time.monotonic() + 5
            while not (
                role := await blocker.fetchval(
                    "SELECT usename FROM pg_stat_activity"
                    " WHERE application_name = 'faraday-memory' AND wait_event_type = 'Lock'"
                )
            ):
                assert time.monotonic() < deadline, "the call never waited for the lock"
                await asyncio.sleep(0.02)
        await call  # the lock is gone: the call completes
    finally:
        await blocker.close()
    return str(role)


async def test_only_service_token_calls_run_as_the_platform_role(
    world: AuthWorld, database_url: str
) -> None:
    as_user = await _role_of_a_call(world, database_url, lambda user: bearer(user_jwt(user)))
    as_backend = await _role_of_a_call(
        world, database_url, lambda _: bearer(world.tokens["backend"])
    )
    assert (as_user, as_backend) == ("faraday_app", "faraday_platform")


async def test_sensitive_operations_and_denials_are_audited(world: AuthWorld, database_url) -> None:
    admin = world.tokens["admin"]
    user = await _user(world, "audited")
    memory = await _memory(world, user, "to be deleted", admin)
    await world.memory.DeleteMemory(
        memory_service_pb2.DeleteMemoryRequest(id=memory.id), metadata=bearer(admin)
    )
    await _code(
        world.memory.GetMemory(memory_service_pb2.GetMemoryRequest(id=1), metadata=bearer("nope"))
    )
    erased_user = await _user(world, "erased")
    await _memory(world, erased_user, "gone soon", admin)
    await world.admin.DeleteUserData(
        admin_service_pb2.DeleteUserDataRequest(user_id=erased_user), metadata=bearer(admin)
    )
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT actor_kind, actor, method, outcome, peer, resource FROM audit_log"
            " WHERE occurred_at > now() - interval '1 minute' ORDER BY id"
        )
    finally:
        await conn.close()
    events = [(r["actor"], r["method"].rsplit("/", 1)[-1], r["outcome"]) for r in rows]
    assert ("admin", "DeleteMemory", "OK") in events
    assert ("anonymous", "GetMemory", "UNAUTHENTICATED") in events
    delete = next(
        r
        for r in rows
        if r["method"].endswith("DeleteMemory") and json.loads(r["resource"]).get("user_id") == user
    )
    # What the server resolved: the memory's id and its owner.
    assert json.loads(delete["resource"]) == {"memory_id": memory.id, "user_id": user}
    erasure = next(
        r
        for r in rows
        if r["method"].endswith("DeleteUserData")
        and json.loads(r["resource"]).get("user_id") == erased_user
    )
    assert json.loads(erasure["resource"]) == {
        "user_id": erased_user,
        "erased": {
            "memories": 1,
            "memory_revisions": 0,
            "memory_import_ids": 0,
            "interactions": 1,
            "lessons": 0,
            "preferences": 0,
        },
    }
    assert delete["peer"].startswith("ipv4:127.0.0.1")


async def test_a_denial_that_cannot_be_audited_is_not_answered_as_usual(
    world: AuthWorld, database_url
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("REVOKE INSERT ON audit_log FROM faraday_app")
        call = world.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=1), metadata=bearer("nope")
        )
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call
        # INTERNAL with an error id: the server cannot keep its audit promise.
        assert denied.value.code() == grpc.StatusCode.INTERNAL
        assert "error id" in (denied.value.details() or "")
    finally:
        await conn.execute("GRANT INSERT ON audit_log TO faraday_app")
        await conn.close()
