"""ImportMemories over a real channel: original times, per-item results, re-runs, dedup, races."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    memory_pb2,
    memory_service_pb2,
    registry_pb2,
)
from google.protobuf import timestamp_pb2

from memory_service.server import RunningServer
from tests.rpc.helpers import register_user, set_user_active
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

CREATED = memory_service_pb2.STORE_OUTCOME_CREATED
DEDUPLICATED = memory_service_pb2.STORE_OUTCOME_DEDUPLICATED
ALREADY_DONE = memory_service_pb2.STORE_OUTCOME_ALREADY_DONE
REJECTED = memory_service_pb2.STORE_OUTCOME_REJECTED


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def item(
    import_id: str,
    user_id: str,
    content: str,
    *,
    category: str = "fact",
    create: datetime | None = None,
    update: datetime | None = None,
    access: datetime | None = None,
    **fields: Any,
) -> memory_service_pb2.ImportItem:
    memory = memory_pb2.Memory(user_id=user_id, content=content, category=category, **fields)
    if create is not None:
        memory.create_time.CopyFrom(ts(create))
    if update is not None:
        memory.update_time.CopyFrom(ts(update))
    if access is not None:
        memory.last_access_time.CopyFrom(ts(access))
    return memory_service_pb2.ImportItem(import_id=import_id, memory=memory)


def stream(
    *chunks: Iterable[memory_service_pb2.ImportItem],
    policy: int = memory_service_pb2.DEDUP_POLICY_UNSPECIFIED,
) -> list[memory_service_pb2.ImportMemoriesRequest]:
    requests = [
        memory_service_pb2.ImportMemoriesRequest(
            options=memory_service_pb2.ImportOptions(dedup_policy=policy)  # type: ignore[arg-type]
        )
    ]
    for chunk in chunks:
        requests.append(
            memory_service_pb2.ImportMemoriesRequest(
                items=memory_service_pb2.ImportItems(items=list(chunk))
            )
        )
    return requests


async def _import(memory_stub, requests, **kwargs) -> memory_service_pb2.ImportMemoriesResponse:
    async def gen() -> AsyncIterator[memory_service_pb2.ImportMemoriesRequest]:
        for r in requests:
            yield r

    return await memory_stub.ImportMemories(gen(), **kwargs)


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def _memories(stub, user: str) -> list[memory_pb2.Memory]:
    page = await stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user, page_size=100)
    )
    return sorted(page.memories, key=lambda m: m.id)


async def _interactions(stub, user: str) -> list[memory_pb2.Interaction]:
    page = await stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=user, page_size=100)
    )
    return list(page.interactions)


DAY = timedelta(days=1)
T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


async def test_import_keeps_original_times(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    response = await _import(
        memory_stub,
        stream(
            [
                item("a", user, "Teaches 7B on Mondays.", create=T0, update=T0 + DAY,
                     access=T0 + 2 * DAY, tags=["x", "y"], importance=0.7),
                item("b", user, "Prefers short quizzes.", create=T0),
            ],
            [item("c", user, "Uses a visualiser.")],
        ),
    )  # fmt: skip
    assert (response.received, response.created, response.rejected) == (3, 3, 0)
    assert list(response.results) == [] and response.results_omitted == 0
    a, b, c = await _memories(memory_stub, user)
    got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=a.id))
    assert got.create_time.ToDatetime(UTC) == T0
    assert got.update_time.ToDatetime(UTC) == T0 + DAY
    assert got.last_access_time.ToDatetime(UTC) == T0 + 2 * DAY
    assert got.import_id == "a" and got.version == 1 and list(got.tags) == ["x", "y"]
    assert got.importance == pytest.approx(0.7)
    # update_time defaults to create_time, last_access_time to unset, create_time to now.
    assert b.update_time == b.create_time and not b.HasField("last_access_time")
    assert abs(c.create_time.ToDatetime(UTC) - datetime.now(UTC)) < timedelta(minutes=1)
    interactions = await _interactions(memory_stub, user)
    assert sorted(i.type for i in interactions) == [memory_pb2.INTERACTION_TYPE_STORE] * 3
    assert {i.context["import_id"] for i in interactions} == {"a", "b", "c"}
    # Found by recall, lexically: the term index was filled by the insert.
    recalled = await memory_stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query="visualiser")
    )
    assert [m.memory.id for m in recalled.memories][:1] == [c.id]


def _violations(result: memory_service_pb2.ImportItemResult) -> list[str]:
    return [v.field for v in result.error.field_violations]


async def test_bad_items_are_rejected_one_by_one_and_the_rest_imported(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    email = f"inactive-{uuid.uuid4().hex[:6]}@school.example.org"
    inactive = await register_user(admin_stub, email)
    await set_user_active(admin_stub, inactive, email, False)
    now = datetime.now(UTC)
    items = [
        item("ok-1", user, "Fine."),
        item("future", user, "From the future.", create=now + timedelta(hours=1)),
        item("order", user, "Updated before created.", create=T0, update=T0 - DAY),
        item("access", user, "Read before created.", create=T0, access=T0 - DAY),
        item("expired", user, "Expired.", expire_time=ts(now - DAY)),
        item("", user, "No import id."),
        item("x" * 129, user, "Long import id."),
        item("bad\tid", user, "Tab in import id."),
        item("fields", user, "", importance=2.0),
        item("nouser", str(uuid.uuid4()), "Unknown user."),
        item("inactive", inactive, "Inactive user."),
        item("noprofile", user, "Unknown profile.", assistant_profile_id=999),
        item("skew", user, "A little ahead.", create=now + timedelta(seconds=20)),
        item("ok-2", user, "Also fine.", create=T0, update=T0, access=T0),
    ]
    response = await _import(memory_stub, stream(items))
    assert (response.received, response.created, response.rejected) == (14, 3, 11)
    by_id = {r.import_id: r for r in response.results}
    assert all(r.outcome == REJECTED and r.memory_id == 0 for r in response.results)
    assert [r.index for r in response.results] == sorted(r.index for r in response.results)
    assert _violations(by_id["future"]) == ["memory.create_time"]
    assert _violations(by_id["order"]) == ["memory.update_time"]
    assert _violations(by_id["access"]) == ["memory.last_access_time"]
    assert _violations(by_id["expired"]) == ["memory.expire_time"]
    assert _violations(by_id[""]) == ["import_id"]
    assert _violations(by_id["x" * 128]) == ["import_id"]  # cut to 128 in the result
    assert _violations(by_id["bad\tid"]) == ["import_id"]
    assert sorted(_violations(by_id["fields"])) == ["memory.content", "memory.importance"]
    assert by_id["fields"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert by_id["nouser"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert by_id["inactive"].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert by_id["inactive"].error.reason == "USER_INACTIVE"
    assert by_id["noprofile"].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    stored = await _memories(memory_stub, user)
    assert [m.import_id for m in stored] == ["ok-1", "skew", "ok-2"]
    # A time a little ahead of the server's clock is taken as now.
    assert stored[1].create_time.ToDatetime(UTC) <= datetime.now(UTC)


async def test_rerunning_the_same_stream_changes_nothing(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    items = [
        item("a", user, "Likes tea.", create=T0, tags=["drinks"]),
        item("b", user, "likes  TEA.", create=T0, tags=["morning"]),  # merges into a
        item("c", user, "Runs the chess club.", create=T0),
        item("c", user, "Runs the chess club (again).", create=T0),  # same import id
    ]
    first = await _import(memory_stub, stream(items[:2], items[2:]))
    assert (first.created, first.deduplicated, first.already_done) == (2, 1, 1)
    before = await _memories(memory_stub, user)
    interactions = await _interactions(memory_stub, user)
    again = await _import(memory_stub, stream(items[:1], items[1:]))
    assert (again.received, again.already_done, again.created, again.deduplicated) == (4, 4, 0, 0)
    assert {r.import_id: r.memory_id for r in again.results} == {
        "a": before[0].id, "b": before[0].id, "c": before[1].id,
    }  # fmt: skip
    assert await _memories(memory_stub, user) == before  # same versions and values
    assert len(await _interactions(memory_stub, user)) == len(interactions)


async def test_exact_duplicates_merge_into_existing_memories(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    later = datetime.now(UTC) + 10 * DAY
    existing = await store(
        memory_stub, user, "Teaches  Year 7 maths.", tags=["a"], importance=0.3,
        expire_time=ts(later), metadata=_struct({"k": 1}), confidence=0.5,
    )  # fmt: skip
    response = await _import(
        memory_stub,
        stream(
            [
                item("m1", user, "teaches year 7 MATHS.", tags=["b", "a"], importance=0.8,
                     metadata=_struct({"k": 2, "j": 3}), confidence=0.9, category="other"),
                item("m2", user, "Teaches year 7 maths.", tags=["c"], importance=0.1,
                     metadata=_struct({"j": 4, "i": 5})),
            ]
        ),
    )  # fmt: skip
    assert (response.created, response.deduplicated) == (0, 2)
    assert [(r.import_id, r.outcome, r.memory_id) for r in response.results] == [
        ("m1", DEDUPLICATED, existing.id), ("m2", DEDUPLICATED, existing.id),
    ]  # fmt: skip
    merged = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=existing.id))
    assert merged.content == existing.content and merged.category == existing.category
    assert list(merged.tags) == ["a", "b", "c"]
    assert merged.importance == pytest.approx(0.8) and merged.confidence == pytest.approx(0.9)
    assert not merged.HasField("expire_time")  # an item without one never expires: latest
    assert dict(merged.metadata) == {"k": 1, "j": 3, "i": 5}
    assert merged.version == existing.version + 1 and merged.import_id == ""
    merges = [
        i for i in await _interactions(memory_stub, user)
        if i.type == memory_pb2.INTERACTION_TYPE_MERGE
    ]  # fmt: skip
    assert sorted(i.context["import_id"] for i in merges) == ["m1", "m2"]
    assert {(i.context["policy"], i.context["via"], i.memory_id) for i in merges} == {
        ("exact", "import", existing.id)
    }
    # Another profile's, or no dedup at all: a memory of its own.
    profile = await _profile(admin_stub)
    other = await _import(
        memory_stub,
        stream([item("p", user, "Teaches year 7 maths.", assistant_profile_id=profile)]),
    )
    none = await _import(
        memory_stub,
        stream(
            [item("n", user, "Teaches year 7 maths.")], policy=memory_service_pb2.DEDUP_POLICY_NONE
        ),
    )
    assert other.created == 1 and none.created == 1


async def test_duplicates_within_a_stream_merge_into_the_first(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    response = await _import(
        memory_stub,
        stream(
            [item("1", user, "Likes tea.", create=T0, tags=["x"]),
             item("2", user, "LIKES TEA.", create=T0 + DAY, tags=["y"], importance=0.9)],
            [item("3", user, " likes tea. ", create=T0, tags=["z"])],
        ),
    )  # fmt: skip
    assert (response.created, response.deduplicated) == (1, 2)
    (memory,) = await _memories(memory_stub, user)
    assert [(r.import_id, r.memory_id) for r in response.results] == [
        ("2", memory.id),
        ("3", memory.id),
    ]
    assert memory.import_id == "1" and memory.create_time.ToDatetime(UTC) == T0
    assert list(memory.tags) == ["x", "y", "z"] and memory.importance == pytest.approx(0.9)
    assert memory.version == 3  # one merge per chunk


async def test_concurrent_imports_of_the_same_facts_end_as_one_memory_each(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    facts = [f"Fact number {n}." for n in range(200)]
    # Two streams, different import ids, the same facts in different order
    # and chunking, plus a third re-sending the first's import ids.
    one = [item(f"one-{n}", user, fact) for n, fact in enumerate(facts)]
    two = [item(f"two-{n}", user, fact.upper()) for n, fact in reversed(list(enumerate(facts)))]
    results = await asyncio.gather(
        _import(memory_stub, stream(one[:100], one[100:])),
        _import(memory_stub, stream(*[two[i : i + 7] for i in range(0, 200, 7)])),
        _import(memory_stub, stream(*[one[i : i + 50] for i in range(0, 200, 50)])),
    )
    assert sum(r.created for r in results) == 200
    assert sum(r.deduplicated for r in results) + sum(r.already_done for r in results) == 400
    page = await memory_stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user, page_size=1000)
    )
    assert sorted(m.content.lower() for m in page.memories) == sorted(f.lower() for f in facts)


async def test_stream_protocol_errors(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    items = memory_service_pb2.ImportMemoriesRequest(
        items=memory_service_pb2.ImportItems(items=[item("a", user, "A.")])
    )
    options = memory_service_pb2.ImportMemoriesRequest(options=memory_service_pb2.ImportOptions())
    empty = memory_service_pb2.ImportMemoriesRequest(items=memory_service_pb2.ImportItems())
    too_many = memory_service_pb2.ImportMemoriesRequest(
        items=memory_service_pb2.ImportItems(items=[item(str(n), user, "B.") for n in range(1001)])
    )
    for requests, field in (
        ([], "options"),
        ([items], "options"),
        ([options, items, options], "options"),
        ([options, empty], "items.items"),
        ([options, too_many], "items.items"),
    ):
        error = await _error(_import(memory_stub, requests))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, requests
        assert field in (error.details() or "")
    # The first chunk of the stream that broke at its third message committed.
    assert [m.import_id for m in await _memories(memory_stub, user)] == ["a"]
    # Options only: an empty import.
    response = await _import(memory_stub, [options])
    assert response.received == 0


async def test_undecodable_message_ends_the_stream_as_invalid_argument(
    server: RunningServer,
) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        method = channel.stream_unary(
            "/faraday.memory.v1.MemoryService/ImportMemories",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        options = memory_service_pb2.ImportMemoriesRequest(
            options=memory_service_pb2.ImportOptions()
        ).SerializeToString()

        async def gen() -> AsyncIterator[bytes]:
            yield options
            yield b"\x12\x05ab"  # a length past the end

        error = await _error(method(gen()))
    finally:
        await channel.close()
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def _struct(value: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    out = struct_pb2.Struct()
    out.update(value)
    return out


async def _profile(admin_stub, name: str = "Import") -> int:
    profile = await admin_stub.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name=name, model_version="m", is_active=True)
        )
    )
    return int(profile.id)


SECRET = "import-test-secret-that-is-long-enough-for-hs256!"
IMPORT_TOKENS = {
    "importer": (["memories:import"], None),
    "writer": (["memories:read", "memories:write", "lessons:read"], None),
    # Profile ids restart at 1 in every test (the tables are truncated).
    "limited": (["memories:import"], [1]),
    "admin": (["admin"], None),
}


@pytest.fixture(scope="module")
async def auth_server(
    app_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    from faraday.memory.v1 import admin_service_pb2_grpc, memory_service_pb2_grpc

    from memory_service.auth import token_hash
    from tests.rpc.conftest import TEST_SETTINGS, shared_server

    tokens = {name: f"fmt_{name}_{uuid.uuid4().hex}" for name in IMPORT_TOKENS}
    path = tmp_path_factory.mktemp("import-auth") / "tokens.json"
    entries = []
    for name, (scopes, profiles) in IMPORT_TOKENS.items():
        entry: dict[str, Any] = {"name": name, "sha256": token_hash(tokens[name]), "scopes": scopes}
        if profiles is not None:
            entry["assistant_profile_ids"] = profiles
        entries.append(entry)
    path.write_text(json.dumps({"tokens": entries}))
    settings = TEST_SETTINGS.with_overrides(service_tokens_file=path, jwt_hs256_secret=SECRET)
    async with (
        shared_server(settings, app_url) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch,
    ):
        stubs = (
            memory_service_pb2_grpc.MemoryServiceStub(ch),
            admin_service_pb2_grpc.AdminServiceStub(ch),
        )
        yield stubs, tokens


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def test_import_needs_its_own_scope(auth_server, database_url: str) -> None:
    import jwt

    (memory, admin), tokens = auth_server
    user = (
        await admin.UpsertUser(
            admin_service_pb2.UpsertUserRequest(
                user=registry_pb2.User(email=f"{uuid.uuid4().hex[:8]}@school.example.org")
            ),
            metadata=_bearer(tokens["admin"]),
        )
    ).id
    requests = stream([item("a", user, "Imported.")])
    # A writer without memories:import, and a user's own JWT, whatever it claims.
    user_token = jwt.encode(
        {"sub": user, "exp": int(datetime.now(UTC).timestamp()) + 300, "scope": "memories:import"},
        SECRET,
        "HS256",
    )
    for token in (tokens["writer"], user_token):
        error = await _error(_import(memory, requests, metadata=_bearer(token)))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    response = await _import(memory, requests, metadata=_bearer(tokens["importer"]))
    assert response.created == 1
    # Audited: one row for the stream.
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT actor, outcome FROM audit_log WHERE method LIKE '%ImportMemories' ORDER BY id"
        )
    finally:
        await conn.close()
    assert [(r["actor"], r["outcome"]) for r in rows][-1] == ("importer", "OK")


async def test_a_profile_limited_importer_writes_only_its_profiles(auth_server) -> None:
    (memory, admin), tokens = auth_server
    admin_md = _bearer(tokens["admin"])
    mine = await admin.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name="Mine", model_version="m", is_active=True)
        ),
        metadata=admin_md,
    )
    other = await admin.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name="Other", model_version="m", is_active=True)
        ),
        metadata=admin_md,
    )
    assert mine.id == 1  # the token's profile
    user = (
        await admin.UpsertUser(
            admin_service_pb2.UpsertUserRequest(
                user=registry_pb2.User(email=f"{uuid.uuid4().hex[:8]}@school.example.org")
            ),
            metadata=admin_md,
        )
    ).id
    response = await _import(
        memory,
        stream(
            [
                item("mine", user, "Mine.", assistant_profile_id=mine.id),
                item("other", user, "Other.", assistant_profile_id=other.id),
                item("shared", user, "Shared."),
            ]
        ),
        metadata=_bearer(tokens["limited"]),
    )
    assert (response.created, response.rejected) == (1, 2)
    assert {r.import_id: r.error.code for r in response.results} == {
        "other": grpc.StatusCode.PERMISSION_DENIED.value[0],
        "shared": grpc.StatusCode.PERMISSION_DENIED.value[0],
    }


async def test_the_cli_imports_a_file_and_reports_bad_lines(
    server: RunningServer, memory_stub, admin_stub, tmp_path: Path
) -> None:
    user = await register_user(admin_stub)
    path = tmp_path / "history.jsonl"
    lines = [
        json.dumps({"import_id": "l1", "memory": {"user_id": user, "content": "One.",
                    "category": "fact", "create_time": "2024-03-01T09:30:00Z"}}),
        "{not json",
        "",
        json.dumps({"importId": "l4", "memory": {"userId": user, "content": "Four.",
                    "category": "fact", "tags": ["a"]}}),
        json.dumps({"import_id": "l5", "memory": {"user_id": user, "content": "",
                    "category": "fact"}}),
        json.dumps({"import_id": "l6", "unknown_field": 1}),
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    command = [
        sys.executable, "-m", "memory_service.cli", "import", str(path),
        "--address", f"127.0.0.1:{server.port}", "--no-progress",
    ]  # fmt: skip

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    first = await asyncio.to_thread(run)
    assert first.returncode == 1, first.stderr
    out = first.stdout
    assert "created       2" in out and "rejected      3" in out, out
    assert "line 2: not sent" in out and "line 6: not sent" in out, out
    assert "line 5: import_id 'l5': memory.content: is required" in out, out
    stored = await _memories(memory_stub, user)
    assert [m.import_id for m in stored] == ["l1", "l4"]
    assert stored[0].create_time.ToDatetime(UTC) == T0
    again = await asyncio.to_thread(run)
    assert "already done  2" in again.stdout and "created       0" in again.stdout, again.stdout
    # Everything fine: exit status 0.
    path.write_text(lines[0] + "\n")
    assert (await asyncio.to_thread(run)).returncode == 0


CALLER_MODEL = "caller-import-3d"


async def _has_pgvector(database_url: str) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL"))
    finally:
        await conn.close()


def _vector_item(import_id: str, user: str, content: str, vector: list[float]) -> Any:
    result = item(import_id, user, content)
    result.memory.embedding.extend(vector)
    result.memory.embedding_model = CALLER_MODEL
    return result


async def test_an_item_vector_needs_vector_support(memory_stub, admin_stub) -> None:
    """The default test server has no model: a vector is FAILED_PRECONDITION, per item."""
    user = await register_user(admin_stub)
    response = await _import(
        memory_stub,
        stream([_vector_item("v", user, "With a vector.", [1, 0, 0]), item("p", user, "Plain.")]),
    )
    assert (response.created, response.rejected) == (1, 1)
    assert response.results[0].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]


async def test_item_vectors_are_stored_and_semantic_dedup_uses_them(
    app_url: str, database_url: str, admin_stub
) -> None:
    if not await _has_pgvector(database_url):
        pytest.skip("this PostgreSQL has no pgvector")
    from faraday.memory.v1 import memory_service_pb2_grpc

    from memory_service.server import start
    from tests.rpc.conftest import TEST_SETTINGS

    settings = TEST_SETTINGS.with_overrides(embedding_model=CALLER_MODEL, embedding_dimension=3)
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            user = await register_user(admin_stub)
            first = await _import(
                stub, stream([_vector_item("a", user, "Has 28 pupils.", [1, 0, 0])])
            )
            response = await _import(
                stub,
                stream(
                    [
                        _vector_item("b", user, "Class of twenty-eight.", [0.99, 0.1, 0]),
                        _vector_item("c", user, "Allergic to peanuts.", [0, 1, 0]),
                        item("d", user, "has 28 PUPILS."),  # no vector: exact
                    ],
                    policy=memory_service_pb2.DEDUP_POLICY_SEMANTIC,
                ),
            )
            memories = await _memories(stub, user)
            interactions = await _interactions(stub, user)
    finally:
        await running.stop(0.5)
    assert first.created == 1
    assert (response.created, response.deduplicated) == (1, 2)
    assert [m.content for m in memories] == ["Has 28 pupils.", "Allergic to peanuts."]
    merges = {
        i.context["import_id"]: i
        for i in interactions
        if i.type == memory_pb2.INTERACTION_TYPE_MERGE
    }
    assert merges["b"].context["policy"] == "semantic"
    assert merges["b"].context["similarity"] == pytest.approx(0.995, abs=0.01)
    assert merges["d"].context["policy"] == "exact"
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM memory_embeddings WHERE user_id = $1", uuid.UUID(user)
        )
    finally:
        await conn.close()
    assert stored == 2


async def test_the_server_embeds_imported_memories_soon_after(
    app_url: str, database_url: str, admin_stub
) -> None:
    if not await _has_pgvector(database_url):
        pytest.skip("this PostgreSQL has no pgvector")
    pytest.importorskip("wordllama", reason="the `embeddings` extra is not installed")
    from faraday.memory.v1 import memory_service_pb2_grpc

    from memory_service.server import start
    from tests.rpc.conftest import TEST_SETTINGS

    running = await start(
        TEST_SETTINGS.with_overrides(embedding_model="wordllama-l2-supercat-256"), app_url
    )
    conn = await asyncpg.connect(database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            user = await register_user(admin_stub)
            contents = ["Prefers bullet points.", "Parking behind the gym.", "Loves chess."]
            response = await _import(
                stub, stream([item(str(n), user, c) for n, c in enumerate(contents)])
            )
            assert response.created == 3
            embedded = 0
            for _ in range(100):  # the backfill runs in the background
                embedded = await conn.fetchval(
                    "SELECT count(*) FROM memory_embeddings WHERE user_id = $1", uuid.UUID(user)
                )
                if embedded == 3:
                    break
                await asyncio.sleep(0.1)
            assert embedded == 3
            recalled = await stub.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(user_id=user, query="lesson format")
            )
            assert recalled.memories[0].memory.content == contents[0]
    finally:
        await conn.close()
        await running.stop(0.5)


async def test_the_typed_client_streams_items_in_chunks(server: RunningServer, admin_stub) -> None:
    from faraday_memory_client import MemoryClient

    user = await register_user(admin_stub)
    sent: list[int] = []

    async def items() -> AsyncIterator[memory_service_pb2.ImportItem]:
        for n in range(25):
            yield item(f"i{n}", user, f"Client fact {n}.")

    async with MemoryClient(f"127.0.0.1:{server.port}") as client:
        response = await client.import_memories(items(), chunk_size=10, on_sent=sent.append)
        again = await client.import_memories(
            [item(f"i{n}", user, f"Client fact {n}.") for n in range(25)],
            dedup_policy=memory_service_pb2.DEDUP_POLICY_NONE,
        )
        with pytest.raises(ValueError):
            await client.import_memories([], chunk_size=1001)
    assert (response.received, response.created) == (25, 25) and sent == [10, 10, 5]
    assert (again.received, again.already_done) == (25, 25)


async def test_stream_order_holds_with_chunks_in_flight(memory_stub, admin_stub) -> None:
    """Chunks after the first may overlap; the first occurrence still wins, every time."""
    user = await register_user(admin_stub)
    other = await register_user(admin_stub)
    for round_ in range(3):
        chunks = [[item(f"w{round_}", other, f"Warm-up {round_}.")]]
        for n in range(6):
            chunks.append(
                [
                    item(
                        f"r{round_}-{n}",
                        user,
                        f"Round {round_} fact." if n % 2 else f"ROUND {round_}  FACT.",
                    )
                ]
            )
        chunks.append([item(f"r{round_}-0", user, "Another text, same import id.")])
        response = await _import(memory_stub, stream(*chunks))
        assert (response.created, response.deduplicated, response.already_done) == (2, 5, 1)
        memories = {m.import_id: m for m in await _memories(memory_stub, user)}
        first = memories[f"r{round_}-0"]
        assert first.content == f"ROUND {round_}  FACT." and first.version == 6
        assert {r.memory_id for r in response.results} == {first.id}
