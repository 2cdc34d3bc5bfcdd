"""Idempotent writes, deadlines, rate limits and message size limits, against the real server."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from faraday_memory_client import MemoryClient
from google.rpc import error_details_pb2

from memory_service.domain.errors import DeadlineExceeded
from memory_service.server import start
from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import field_violations, recalls_written, register_user, status_details

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _store(user: str, content: str, request_id: str) -> memory_service_pb2.StoreMemoryRequest:
    return memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(user_id=user, content=content, category="fact"),
        request_id=request_id,
    )


async def _count(database_url: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def test_racing_retries_of_one_request_id_store_once(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    request = _store(user, "stored exactly once", "req-" + uuid.uuid4().hex)
    results = await asyncio.gather(*(memory_stub.StoreMemory(request) for _ in range(12)))
    assert len({m.id for m in results}) == 1
    assert (
        await _count(
            database_url, "SELECT count(*) FROM user_memories WHERE user_id = $1", uuid.UUID(user)
        )
        == 1
    )
    # One store interaction, not twelve.
    assert (
        await _count(
            database_url,
            "SELECT count(*) FROM memory_interactions WHERE memory_id = $1",
            results[0].id,
        )
        == 1
    )
    # A later retry returns the same memory too; a new id stores a new one
    # (without dedup: with it, the default, it would merge into the first).
    again = await memory_stub.StoreMemory(request)
    unique = _store(user, "stored exactly once", "req-other")
    unique.dedup_policy = memory_service_pb2.DEDUP_POLICY_NONE
    other = await memory_stub.StoreMemory(unique)
    assert again.id == results[0].id and other.id != again.id


async def test_reusing_a_request_id_for_another_request_is_invalid(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    await memory_stub.StoreMemory(_store(user, "first", "same-id"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await memory_stub.StoreMemory(_store(user, "different", "same-id"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(info.value) == ["request_id"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await memory_stub.StoreMemory(_store(user, "x", "has space"))
    assert field_violations(info.value) == ["request_id"]


async def test_a_request_id_is_the_callers_per_user(memory_stub, admin_stub) -> None:
    """Keys live with their user's rows (migration 0017): another user's request
    with the same id is another key, not a reuse."""
    first, second = await register_user(admin_stub), await register_user(admin_stub)
    mine = await memory_stub.StoreMemory(_store(first, "same words", "shared-id"))
    theirs = await memory_stub.StoreMemory(_store(second, "same words", "shared-id"))
    assert theirs.id != mine.id and theirs.user_id == second
    assert (await memory_stub.StoreMemory(_store(second, "same words", "shared-id"))).id == (
        theirs.id
    )


async def test_feedback_with_a_request_id_applies_once(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    memory = await memory_stub.StoreMemory(_store(user, "rated", ""))
    request = memory_service_pb2.RecordFeedbackRequest(
        memory_id=memory.id, helpful=True, request_id="fb-" + uuid.uuid4().hex
    )
    responses = await asyncio.gather(*(memory_stub.RecordFeedback(request) for _ in range(8)))
    assert len({r.interaction.id for r in responses}) == 1
    current = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory.id))
    assert current.importance == pytest.approx(0.5 + 0.2 * 0.5)  # moved once, not 8 times
    assert current.version == 2


async def test_statement_timeout_follows_the_remaining_deadline(app_url: str) -> None:
    db = Database(
        PoolSettings(
            url=app_url,
            platform_url=migrate.platform_role_url(app_url),
            size=2,
            user_size=1,
            max_overflow=0,
        )
    )
    await db.open()
    try:
        token = session.deadline.set(time.monotonic() + 0.3)
        try:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                async with db.connection() as conn:
                    await conn.execute("SELECT pg_sleep(5)")
            assert time.monotonic() - started < 1.5
        finally:
            session.deadline.reset(token)
        async with db.connection() as conn:  # the one user connection is back, unlimited again
            assert await conn.fetchval("SHOW statement_timeout") == "30s"
    finally:
        await db.close()


async def test_a_call_past_its_deadline_stops_its_database_work(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    memory = await memory_stub.StoreMemory(_store(user, "locked", ""))
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT 1 FROM user_memories WHERE id = $1 FOR UPDATE", memory.id)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await memory_stub.RecordFeedback(
                    memory_service_pb2.RecordFeedbackRequest(memory_id=memory.id, rating=5),
                    timeout=0.5,
                )
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - started < 2
            # The server's query no longer waits for the lock: it was cancelled.
            deadline = time.monotonic() + 3
            while await blocker.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'faraday-memory'"
                " AND wait_event_type = 'Lock'"
            ):
                assert time.monotonic() < deadline, "the cancelled query still waits"
                await asyncio.sleep(0.05)
    finally:
        await blocker.close()
    after = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory.id))
    assert after.importance == pytest.approx(0.5) and after.version == 1  # nothing half-done


async def test_rate_limit_answers_resource_exhausted_with_retry_info(app_url: str) -> None:
    settings = TEST_SETTINGS.with_overrides(rate_limit_per_second=1.0, rate_limit_burst=3)
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            codes = []
            for _ in range(5):
                try:
                    await stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=1))
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    last = error
            assert codes[:3] == [grpc.StatusCode.NOT_FOUND] * 3  # the burst got through
            assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status_details(last).details)
            assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 1.0
    finally:
        await running.stop(0.5)


async def test_the_client_waits_out_a_rate_limit_as_the_server_asks(app_url: str) -> None:
    """RetryInfo's delay also travels as grpc-retry-pushback-ms, which gRPC's
    own retry policy (service_config.json) obeys: a rate-limited read is
    retried once the bucket has a token again, not at the policy's backoff."""
    settings = TEST_SETTINGS.with_overrides(rate_limit_per_second=2.0, rate_limit_burst=1)
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError):  # NOT_FOUND: spends the burst
                await stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=1))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=1))
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            pushback = dict(raised.value.trailing_metadata() or ())["grpc-retry-pushback-ms"]
            retry = error_details_pb2.RetryInfo()
            assert any(d.Unpack(retry) for d in status_details(raised.value).details)
            assert int(pushback) == retry.retry_delay.ToMilliseconds() > 0
        await asyncio.sleep(1.0)  # a full bucket again
        async with MemoryClient(
            f"127.0.0.1:{running.port}", initial_backoff_seconds=0.001, max_backoff_seconds=0.001
        ) as client:
            with pytest.raises(grpc.aio.AioRpcError) as first:
                await client.get_memory(1)
            assert first.value.code() == grpc.StatusCode.NOT_FOUND
            began = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as second:
                await client.get_memory(1)  # limited, then retried after the pushback
            waited = time.monotonic() - began
            assert second.value.code() == grpc.StatusCode.NOT_FOUND
            # The bucket refills a token in 0.5 s; a 1 ms backoff would have
            # spent all 3 attempts long before that.
            assert 0.3 < waited < 2.0
    finally:
        await running.stop(0.5)


async def test_oversized_messages_are_rejected_before_any_work(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await memory_stub.StoreMemory(_store(user, "x" * (2 * 1024 * 1024), ""))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _count(database_url, "SELECT count(*) FROM user_memories") == 0


async def test_concurrent_recalls_of_one_user_neither_wait_nor_deadlock(
    memory_stub, admin_stub, database_url, server
) -> None:
    user = await register_user(admin_stub)
    for n in range(30):
        await memory_stub.StoreMemory(_store(user, f"fractions lesson note {n}", ""))
    requests = [
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query=q, limit=20)
        for q in ("", "fractions", "lesson note", "note fractions")
    ]
    results = await asyncio.gather(
        *(memory_stub.RecallMemories(requests[n % 4], timeout=10) for n in range(64)),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    # Every recall still logged its interactions, whoever bumped last_accessed.
    await recalls_written(server)
    assert await _count(
        database_url,
        "SELECT count(*) FROM memory_interactions WHERE user_id = $1"
        " AND interaction_type = 'recall'",
        uuid.UUID(user),
    ) == sum(len(r.memories) for r in results)
