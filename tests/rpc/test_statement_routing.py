"""Every statement the hot RPCs run names one user's rows by that user.

With the per-user tables sharded by user_id (Citus: docs/scaling.md,
"Distributing by user with Citus"), a statement goes to one shard only if
every per-user table it reads or changes is narrowed by `user_id =` a value
or a co-located column. Citus is not installable here, so the test records
every statement a real server runs for the hot RPCs (asyncpg's query logger
on the service's own pool connections, over a real channel), has PostgreSQL
plan each one with the arguments it ran with (EXPLAIN, which executes
nothing), and requires each scan of a distributed table to carry a user_id
equality. A statement that joined memories by id alone would fail it.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)
from google.protobuf import field_mask_pb2

from memory_service.auth import token_hash
from memory_service.server import start
from memory_service.storage import database, tables
from memory_service.storage.memories import OWNER_OF_MEMORY
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.test_auth import AUDIENCE, ISSUER, SECRET, bearer, user_jwt

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The statements allowed to read every shard. OWNER_OF_MEMORY: a caller that
# may see every user's memories names a memory by id alone (GetMemory and the
# like); the owner is looked up first, and the statements after it route.
FAN_OUT = frozenset({OWNER_OF_MEMORY})

# ImportMemories' own statements read its session's temporary staging table,
# which another session cannot plan; the import is a multi-user batch anyway
# (docs/scaling.md).
_SESSION_LOCAL = "import_staging"

# Captured before the `recorded` fixture wraps it.
SERVICE_INIT = database._init_connection

_DML = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
# `user_id = $1`, `user_id = '…'::uuid`, `(r.user_id = m.user_id)`; not `= ANY (…)`.
_BY_USER = re.compile(r"\buser_id = (?!ANY\b)")
_CONDITIONS = ("Index Cond", "Filter", "Recheck Cond")
_JOIN_CONDITIONS = ("Hash Cond", "Merge Cond", "Join Filter")


@dataclass
class Recorded:
    memory: memory_service_pb2_grpc.MemoryServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    tokens: dict[str, str]
    profile: int
    statements: list[Any]


@pytest.fixture
async def recorded(
    monkeypatch: pytest.MonkeyPatch, app_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[Recorded]:
    """A server of its own whose pool connections record every statement they run,
    with a service token for all users and one limited to an assistant profile."""
    owner = await asyncpg.connect(database_url)
    try:
        profile = await owner.fetchval(
            "INSERT INTO assistant_profiles (name, model_version) VALUES ('Routed', 'm')"
            " RETURNING id"
        )
    finally:
        await owner.close()
    tokens = {name: f"fmt_{name}_{uuid.uuid4().hex}" for name in ("platform", "limited")}
    path = tmp_path / "tokens.json"
    scopes = ["memories:read", "memories:write", "memories:import", "admin"]
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": "platform",
                        "sha256": token_hash(tokens["platform"]),
                        "scopes": scopes,
                    },
                    {
                        "name": "limited",
                        "sha256": token_hash(tokens["limited"]),
                        "scopes": scopes[:2],
                        "assistant_profile_ids": [profile],
                    },
                ]
            }
        )
    )
    statements: list[Any] = []

    async def recording_init(conn: asyncpg.Connection) -> None:
        await SERVICE_INIT(conn)
        conn.add_query_logger(statements.append)

    monkeypatch.setattr(database, "_init_connection", recording_init)
    settings = TEST_SETTINGS.with_overrides(
        service_tokens_file=path, jwt_hs256_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Recorded(
                memory_service_pb2_grpc.MemoryServiceStub(channel),
                admin_service_pb2_grpc.AdminServiceStub(channel),
                tokens,
                profile,
                statements,
            )
    finally:
        await running.stop(0)


async def _hot_calls(
    memory: memory_service_pb2_grpc.MemoryServiceStub,
    user: str,
    metadata: tuple[tuple[str, str]],
    profile: int,
    *,
    imports: bool,
) -> None:
    """Each hot RPC, with and without its optional parts, as the caller `metadata` names."""

    def memory_of(content: str) -> memory_pb2.Memory:
        return memory_pb2.Memory(
            user_id=user, content=content, category="fact", assistant_profile_id=profile
        )

    async def store(content: str, request_id: str = "") -> memory_pb2.Memory:
        request = memory_service_pb2.StoreMemoryRequest(
            memory=memory_of(content), request_id=request_id
        )
        return await memory.StoreMemory(request, metadata=metadata)

    first = await store("Teaches fractions with pizza.", request_id="s-1")
    await store("Teaches fractions with pizza.", request_id="s-1")  # replay
    await store("Teaches  fractions with PIZZA.")  # the same: merged
    await memory.BatchStoreMemories(
        memory_service_pb2.BatchStoreMemoriesRequest(
            requests=[
                memory_service_pb2.StoreMemoryRequest(memory=memory_of(c), request_id=f"b-{i}")
                for i, c in enumerate(["Runs the chess club.", "Marks in green ink."])
            ]
        ),
        metadata=metadata,
    )
    for query in ("", "fractions pizza"):
        await memory.RecallMemories(
            memory_service_pb2.RecallMemoriesRequest(user_id=user, query=query, limit=5),
            metadata=metadata,
        )
    for request_id in ("f-1", "f-1", ""):  # keyed, replayed, unkeyed
        await memory.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(
                memory_id=first.id, helpful=True, request_id=request_id
            ),
            metadata=metadata,
        )
    get = memory_service_pb2.GetMemoryRequest(id=first.id)
    current = await memory.GetMemory(get, metadata=metadata)
    current.content = "Teaches fractions with pie."
    await memory.UpdateMemory(
        memory_service_pb2.UpdateMemoryRequest(
            memory=current, update_mask=field_mask_pb2.FieldMask(paths=["content"])
        ),
        metadata=metadata,
    )
    await memory.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user), metadata=metadata
    )
    for by in ({"user_id": user}, {"memory_id": first.id}):
        await memory.ListInteractions(
            memory_service_pb2.ListInteractionsRequest(**by), metadata=metadata
        )
    await memory.ListMemoryRevisions(
        memory_service_pb2.ListMemoryRevisionsRequest(memory_id=first.id), metadata=metadata
    )
    if imports:
        items = [
            memory_service_pb2.ImportItem(import_id=f"i-{i}", memory=memory_of(content))
            for i, content in enumerate(["Runs the chess club.", "Coaches netball."])
        ]

        async def stream() -> AsyncIterator[memory_service_pb2.ImportMemoriesRequest]:
            yield memory_service_pb2.ImportMemoriesRequest(
                options=memory_service_pb2.ImportOptions()
            )
            yield memory_service_pb2.ImportMemoriesRequest(
                items=memory_service_pb2.ImportItems(items=items)
            )

        await memory.ImportMemories(stream(), metadata=metadata)
    await memory.DeleteMemory(
        memory_service_pb2.DeleteMemoryRequest(id=first.id), metadata=metadata
    )
    with pytest.raises(grpc.aio.AioRpcError):  # gone: the owner lookup finds nothing
        await memory.GetMemory(get, metadata=metadata)


def _scans(node: dict[str, Any], joins: tuple[str, ...] = ()) -> Iterator[tuple[dict, str]]:
    """Each scan of a table in the plan, with the join conditions above it."""
    relation = node.get("Relation Name")
    if relation is not None and node["Node Type"] != "ModifyTable":
        own = " ".join(str(node[k]) for k in _CONDITIONS if k in node)
        yield node, " ".join((own, *joins))
    here = tuple(str(node[k]) for k in _JOIN_CONDITIONS if k in node)
    for child in node.get("Plans", []):
        yield from _scans(child, joins + here)


def unrouted_scans(plan: dict[str, Any]) -> list[str]:
    """The scans of distributed tables in `plan` that no user_id equality narrows."""
    return [
        f"{scan['Node Type']} on {scan['Relation Name']}: {conditions or 'no condition'}"
        for scan, conditions in _scans(plan["Plan"])
        if scan["Relation Name"] in tables.DISTRIBUTED_TABLES and not _BY_USER.search(conditions)
    ]


async def _explain(owner: asyncpg.Connection, query: str, args: Any) -> dict[str, Any]:
    if args and isinstance(args[0], tuple):  # executemany: plan the first row
        args = args[0]
    text = await owner.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
    plan: dict[str, Any] = json.loads(text)[0]
    return plan


@pytest.mark.parametrize("caller", ["platform", "limited", "user"])
async def test_hot_statements_each_read_one_user(
    recorded: Recorded, database_url: str, caller: str
) -> None:
    """As a service token for all users (the owner of a memory named by id is
    looked up first), one limited to a profile (the same, and the profile's
    filters), and a user's own token (the owner is the user: no lookup)."""
    platform = bearer(recorded.tokens["platform"])
    user = await _register(recorded.admin, platform)
    other = await _register(recorded.admin, platform)
    await recorded.memory.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(user_id=other, content="Someone else's.", category="fact")
        ),
        metadata=platform,
    )
    metadata = bearer(user_jwt(user) if caller == "user" else recorded.tokens[caller])
    recorded.statements.clear()
    await _hot_calls(
        recorded.memory, user, metadata, recorded.profile, imports=caller == "platform"
    )
    await asyncio.sleep(0)  # the query logger reports through call_soon
    owner = await asyncpg.connect(database_url)
    await SERVICE_INIT(owner)  # the service's codecs, to bind the arguments as it did
    try:
        # Plans without row-level security's own user_id filters: an error,
        # not a pass, if this role were subject to them.
        await owner.execute("SET row_security = off")
        checked, fanned_out, problems = set(), set(), []
        for logged in recorded.statements:
            query = logged.query
            if query in FAN_OUT:
                fanned_out.add(query)
                continue
            if not _DML.match(query) or _SESSION_LOCAL in query or query in checked:
                continue
            checked.add(query)
            if not any(re.search(rf"\b{t}\b", query) for t in tables.DISTRIBUTED_TABLES):
                continue
            for scan in unrouted_scans(await _explain(owner, query, logged.args)):
                problems.append(f"{scan}\n    in: {' '.join(query.split())[:300]}")
    finally:
        await owner.close()
    assert problems == []
    # A user's own token names its user: nothing goes to every shard.
    assert fanned_out == (set() if caller == "user" else FAN_OUT)
    assert len(checked) >= 15, len(checked)  # the recording worked


async def _register(
    admin: admin_service_pb2_grpc.AdminServiceStub, metadata: tuple[tuple[str, str]]
) -> str:
    user = await admin.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(
                email=f"routed-{uuid.uuid4().hex[:8]}@school.example.org", is_active=True
            )
        ),
        metadata=metadata,
    )
    return user.id


async def test_a_join_by_memory_id_alone_is_caught() -> None:
    """The plan check itself: a scan narrowed by id alone fails, one by user passes."""
    by_id = {"Node Type": "Index Scan", "Relation Name": "user_memories", "Index Cond": "(id = 1)"}
    by_user = {
        "Node Type": "Index Scan",
        "Relation Name": "memory_interactions",
        "Index Cond": "(user_id = '5c0e8d1e-0000-4000-8000-000000000000'::uuid)",
    }
    joined = dict(by_id, **{"Index Cond": "(id = i.memory_id)"})
    plan = {"Plan": {"Node Type": "Nested Loop", "Plans": [by_user, joined]}}
    assert unrouted_scans(plan) == ["Index Scan on user_memories: (id = i.memory_id)"]
    many = {
        "Node Type": "Seq Scan",
        "Relation Name": "memory_terms",
        "Filter": "(user_id = ANY ($1))",
    }
    assert unrouted_scans({"Plan": many}) == ["Seq Scan on memory_terms: (user_id = ANY ($1))"]
    # Joined on user_id to a scan that is narrowed by user: co-located, one shard.
    hashed = {
        "Node Type": "Hash Join",
        "Hash Cond": "(m.user_id = i.user_id)",
        "Plans": [by_user, by_id],
    }
    assert unrouted_scans({"Plan": hashed}) == []
    # Reference tables are on every node: no condition needed.
    assert unrouted_scans({"Plan": {"Node Type": "Seq Scan", "Relation Name": "lessons"}}) == []
