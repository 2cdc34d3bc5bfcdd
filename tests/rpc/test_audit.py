"""No change without its audit row, and no audit row built from request text.

The audited RPCs (UpdateMemory, DeleteMemory, every AdminService call) run
on the suite's server. Hostile text in the fields such a call ignores or
treats as output-only must not decide whether the audit row can be written;
and when the audit row really cannot be written (the service role loses
its INSERT privilege on audit_log, as the owner arranges here) the change
must not commit either, and the caller must hear about it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import admin_service_pb2, memory_pb2, memory_service_pb2
from google.protobuf import field_mask_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rpc.helpers import register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

HOSTILE = ["\x00", "a\x00b", "x" * 70_000, "'); DROP TABLE audit_log; --", "\ud7ff\U0010ffff"]


@pytest.fixture
async def owner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.execute("GRANT INSERT ON audit_log TO faraday_app, faraday_platform")
    await conn.close()


async def _rows(owner: asyncpg.Connection, method: str) -> list[dict[str, object]]:
    rows = await owner.fetch(
        "SELECT outcome, resource FROM audit_log WHERE method LIKE '%/' || $1 ORDER BY id", method
    )
    return [{"outcome": r["outcome"], **json.loads(r["resource"])} for r in rows]


def _update(memory_id: int, **ignored: str) -> memory_service_pb2.UpdateMemoryRequest:
    """Sets importance only; `ignored` fills fields the mask leaves out."""
    return memory_service_pb2.UpdateMemoryRequest(
        memory=memory_pb2.Memory(id=memory_id, importance=0.9, **ignored),
        update_mask=field_mask_pb2.FieldMask(paths=["importance"]),
    )


async def test_ignored_fields_with_nul_bytes_do_not_stop_the_audit_row(
    memory_stub, admin_stub, owner
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user)
    updated = await memory_stub.UpdateMemory(
        _update(memory.id, user_id="\x00evil", content="\x00", category="a\x00", source="\x00")
    )
    assert updated.importance == pytest.approx(0.9)
    rows = await _rows(owner, "UpdateMemory")
    assert rows[-1] == {"outcome": "OK", "memory_id": memory.id, "user_id": user}


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    user_id=st.sampled_from(HOSTILE) | st.text(max_size=40),
    content=st.sampled_from(HOSTILE) | st.text(max_size=40),
    etag_digits=st.integers(min_value=0, max_value=3),
)
async def test_hostile_ignored_fields_never_change_without_an_audit_row(
    memory_stub, admin_stub, owner, user_id: str, content: str, etag_digits: int
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user)
    before = len(await _rows(owner, "UpdateMemory"))
    request = _update(memory.id, user_id=user_id, content=content)
    request.memory.create_time.CopyFrom(timestamp_pb2.Timestamp(seconds=253402300799))
    request.memory.version = 10**etag_digits
    code = grpc.StatusCode.OK
    try:
        await memory_stub.UpdateMemory(request)
    except grpc.aio.AioRpcError as error:
        code = error.code()
    rows = await _rows(owner, "UpdateMemory")
    assert code == grpc.StatusCode.OK, code
    assert len(rows) == before + 1
    assert rows[-1] == {"outcome": "OK", "memory_id": memory.id, "user_id": user}


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        assert "Exception" not in (error.details() or "")
        return error.code()
    return grpc.StatusCode.OK


async def test_a_change_whose_audit_row_fails_does_not_commit(
    memory_stub, admin_stub, owner
) -> None:
    user = await register_user(admin_stub)
    memory = await store(memory_stub, user, importance=0.2)
    await owner.execute("REVOKE INSERT ON audit_log FROM faraday_app, faraday_platform")

    # Each answers INTERNAL (an error id, no exception text) and changes nothing.
    assert await _code(memory_stub.UpdateMemory(_update(memory.id))) == grpc.StatusCode.INTERNAL
    assert (
        await _code(memory_stub.DeleteMemory(memory_service_pb2.DeleteMemoryRequest(id=memory.id)))
        == grpc.StatusCode.INTERNAL
    )
    assert (
        await _code(
            admin_stub.DeleteUserData(admin_service_pb2.DeleteUserDataRequest(user_id=user))
        )
        == grpc.StatusCode.INTERNAL
    )
    # A failed call whose row cannot be written keeps its own status.
    missing = memory_service_pb2.DeleteMemoryRequest(id=memory.id + 1000)
    assert await _code(memory_stub.DeleteMemory(missing)) == grpc.StatusCode.NOT_FOUND

    row = await owner.fetchrow(
        "SELECT importance, version FROM user_memories WHERE id = $1", memory.id
    )
    assert row is not None and (row["importance"], row["version"]) == (pytest.approx(0.2), 1)
    assert await owner.fetchval("SELECT count(*) FROM users WHERE id = $1", uuid.UUID(user)) == 1
    assert [r for r in await _rows(owner, "DeleteUserData") if r.get("user_id") == user] == []

    await owner.execute("GRANT INSERT ON audit_log TO faraday_app, faraday_platform")
    await memory_stub.DeleteMemory(memory_service_pb2.DeleteMemoryRequest(id=memory.id))
    rows = await _rows(owner, "DeleteMemory")
    assert rows[-1] == {"outcome": "OK", "memory_id": memory.id, "user_id": user}
