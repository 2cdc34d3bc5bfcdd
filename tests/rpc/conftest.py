"""A real server on an ephemeral port, a real channel, real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from faraday.memory.v1 import (
    admin_service_pb2_grpc,
    lesson_service_pb2_grpc,
    memory_service_pb2_grpc,
)
from faraday_memory_client import AdminClient, MemoryClient

from memory_service.config import Settings
from memory_service.server import RunningServer, start
from memory_service.storage import migrate
from tests.conftest import migrated_scratch_database
from tests.rpc.helpers import LossyProxy, recalls_written

# TRUNCATE fires no triggers: the memories' and lessons' term indexes go with them.
TABLES = (
    "memory_revisions, memory_interactions, user_memories, memory_terms, memory_user_stats,"
    " lessons, lesson_terms, assistant_capabilities, assistant_profiles, subject_categories,"
    " user_preferences, users"
)

# The suite makes thousands of deliberately denied calls from one address:
# the denied-call budget is tested on its own (test_denial_flood.py).
TEST_SETTINGS = Settings(
    port=0,
    pool_size=2,
    pool_max_overflow=4,
    sweep_interval_seconds=0,
    partition_interval_seconds=0,  # test_partitions.py starts a server with it
    grace_period_seconds=1,
    denied_calls_burst=1_000_000,
)


@pytest.fixture(scope="session")
async def database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """One migrated scratch database for the RPC tests of this session."""
    async with migrated_scratch_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
async def has_pgvector(database_url: str) -> bool:
    """Whether the database keeps vectors (pgvector); without it they are FAILED_PRECONDITION."""
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL"))
    finally:
        await conn.close()


# The servers that outlive a test (shared_server): their queued recall
# bookkeeping is written before each test's TRUNCATE, so none of it lands in
# the next test's tables, nor takes its locks while TRUNCATE takes them
# (a deadlock, seen between test_observability's two log formats).
_SHARED_SERVERS: list[RunningServer] = []


@asynccontextmanager
async def shared_server(settings: Settings, app_url: str) -> AsyncIterator[RunningServer]:
    """A server for a session or module fixture, which several tests call."""
    running = await start(settings, app_url)
    _SHARED_SERVERS.append(running)
    try:
        yield running
    finally:
        _SHARED_SERVERS.remove(running)
        await running.stop(1.0)


@pytest.fixture(autouse=True)
async def _clean_tables(database_url: str) -> AsyncIterator[None]:
    await recalls_written(*_SHARED_SERVERS)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
    yield


@pytest.fixture(scope="session")
def app_url(database_url: str) -> str:
    """The same database as the service role, which row-level security binds."""
    return migrate.app_role_url(database_url)


@pytest.fixture(scope="session")
async def server(app_url: str) -> AsyncIterator[RunningServer]:
    async with shared_server(TEST_SETTINGS, app_url) as running:
        yield running


@pytest.fixture(scope="session")
async def channel(server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def memory_stub(channel: grpc.aio.Channel) -> memory_service_pb2_grpc.MemoryServiceStub:
    return memory_service_pb2_grpc.MemoryServiceStub(channel)


@pytest.fixture
def lesson_stub(channel: grpc.aio.Channel) -> lesson_service_pb2_grpc.LessonServiceStub:
    return lesson_service_pb2_grpc.LessonServiceStub(channel)


@pytest.fixture
def admin_stub(channel: grpc.aio.Channel) -> admin_service_pb2_grpc.AdminServiceStub:
    return admin_service_pb2_grpc.AdminServiceStub(channel)


@dataclass
class CachedStubs:
    """A second server, configured with the Redis lesson cache."""

    server: RunningServer
    memory_stub: memory_service_pb2_grpc.MemoryServiceStub
    lesson_stub: lesson_service_pb2_grpc.LessonServiceStub
    admin_stub: admin_service_pb2_grpc.AdminServiceStub
    redis: aioredis.Redis


@pytest.fixture(scope="session")
async def _cached_server(
    app_url: str, redis_url: str
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel, aioredis.Redis]]:
    settings = TEST_SETTINGS.with_overrides(redis_url=redis_url)
    async with shared_server(settings, app_url) as running:
        client = aioredis.from_url(redis_url)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            yield running, ch, client
        await client.aclose()


@pytest.fixture
async def cached_stubs(
    _cached_server: tuple[RunningServer, grpc.aio.Channel, aioredis.Redis],
) -> CachedStubs:
    running, ch, client = _cached_server
    await client.flushdb()
    return CachedStubs(
        server=running,
        memory_stub=memory_service_pb2_grpc.MemoryServiceStub(ch),
        lesson_stub=lesson_service_pb2_grpc.LessonServiceStub(ch),
        admin_stub=admin_service_pb2_grpc.AdminServiceStub(ch),
        redis=client,
    )


ClientT = TypeVar("ClientT", bound=MemoryClient | AdminClient)
StartLossy = Callable[..., Awaitable[tuple[LossyProxy, Any]]]


@pytest.fixture
async def lossy(server: RunningServer) -> AsyncIterator[StartLossy]:
    """Start a LossyProxy losing the first response of a method; return it and a client of it.

    ``await lossy(method, client_type=MemoryClient, **proxy_options)``: the
    client is a `client_type` (MemoryClient or AdminClient) of the proxy, and
    `proxy_options` go to LossyProxy.
    """
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, MemoryClient | AdminClient]] = []

    async def start(
        lose: str, client_type: type[ClientT] = MemoryClient, **proxy_options: Any
    ) -> tuple[LossyProxy, ClientT]:
        upstream = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        proxy = LossyProxy(upstream, lose, **proxy_options)
        proxy_server = grpc.aio.server()
        proxy_server.add_generic_rpc_handlers((proxy,))
        port = proxy_server.add_insecure_port("127.0.0.1:0")
        await proxy_server.start()
        client = client_type(
            f"127.0.0.1:{port}",
            metadata_provider=lambda: [("authorization", "Bearer test-token")],
            initial_backoff_seconds=0.01,
        )
        started.append((proxy_server, upstream, client))
        return proxy, client

    yield start
    for proxy_server, upstream, client in started:
        await client.close()
        await proxy_server.stop(None)
        await upstream.close(None)
