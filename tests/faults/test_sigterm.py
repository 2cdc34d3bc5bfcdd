"""SIGTERM while calls are in flight: they finish, new calls are refused, the process exits 0.

To be sure calls really are in flight when the signal arrives, the test holds
a lock that every StoreMemory's INSERT waits for, sends SIGTERM while all
writers are waiting on it inside the server, and releases it a moment later.
"""

from __future__ import annotations

import asyncio
import signal
import time

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import admin_service_pb2_grpc, memory_service_pb2_grpc

from tests.faults.conftest import (
    Call,
    ServerProcess,
    Urls,
    code_counts,
    new_call,
    present_ids,
    store,
)
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

GRACE_SECONDS = 5.0  # what the server_process fixture passes as --grace-period-seconds
WRITERS = 8
HOLD_SECONDS = 1.5  # how long after SIGTERM the in-flight calls stay blocked
SHUTDOWN_BEGUN = 0.5  # by then the server has handled SIGTERM and stopped taking calls

_WAITING_ON_LOCKS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'faraday-memory'
  AND wait_event_type = 'Lock'
"""


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_calls_and_refuses_new_ones(
    migrated_database: Urls, server_process: ServerProcess
) -> None:
    server = server_process
    target = await server.start()
    calls: list[Call] = []
    probes: list[Call] = []
    stopped = asyncio.Event()
    locker = await asyncpg.connect(migrated_database.owner)
    watcher = await asyncpg.connect(migrated_database.owner)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

            async def writer() -> None:
                while not stopped.is_set():
                    call = new_call("sigterm")
                    calls.append(call)
                    await store(stub, user, call, 10.0)
                    if not call.ok:
                        return  # the server is going away

            tasks = [asyncio.create_task(writer()) for _ in range(WRITERS)]
            try:
                await asyncio.sleep(0.5)  # calls flowing normally
                hold = locker.transaction()
                await hold.start()
                await locker.execute("LOCK TABLE user_memories IN SHARE MODE")
                deadline = time.monotonic() + 10
                while await watcher.fetchval(_WAITING_ON_LOCKS) < WRITERS:
                    assert time.monotonic() < deadline, "writers did not block on the lock"
                    await asyncio.sleep(0.02)

                sigterm_at = time.monotonic()
                server.signal(signal.SIGTERM)
                await asyncio.sleep(SHUTDOWN_BEGUN)
                # New calls, once shutdown has begun: on the open channel and on a new one.
                for _ in range(3):
                    probes.append(await store(stub, user, new_call("probe"), 3.0))
                async with grpc.aio.insecure_channel(target) as fresh:
                    fresh_stub = memory_service_pb2_grpc.MemoryServiceStub(fresh)
                    for _ in range(2):
                        probes.append(await store(fresh_stub, user, new_call("probe"), 3.0))
                await asyncio.sleep(max(0.0, sigterm_at + HOLD_SECONDS - time.monotonic()))
                await hold.commit()
                released_at = time.monotonic()
                exit_code = await server.wait(GRACE_SECONDS + 10)
                exited_at = time.monotonic()
            finally:
                stopped.set()
                await asyncio.gather(*tasks)
    finally:
        await locker.close()
        await watcher.close()

    in_flight = [c for c in calls if c.started < sigterm_at < c.ended]
    before = [c for c in calls if c.started < sigterm_at]
    late = [c for c in calls if c.started >= sigterm_at + SHUTDOWN_BEGUN] + probes
    between = [c for c in calls if sigterm_at <= c.started < sigterm_at + SHUTDOWN_BEGUN]
    acknowledged = [c for c in calls if c.ok]
    present = await present_ids(migrated_database.owner, (c.memory_id for c in acknowledged))
    print(
        f"\n[sigterm] calls before SIGTERM={len(before)} ({code_counts(before)});"
        f" in flight at SIGTERM={len(in_flight)} ({code_counts(in_flight)}),"
        f" slowest {max((c.seconds for c in in_flight), default=0.0):.2f}s"
        f"\n[sigterm] started in the first {SHUTDOWN_BEGUN}s after={len(between)}"
        f" ({code_counts(between)}); new calls after shutdown began={len(late)}"
        f" ({code_counts(late)}, slowest {max((c.seconds for c in late), default=0.0):.3f}s)"
        f"\n[sigterm] lock released {released_at - sigterm_at:.2f}s after SIGTERM;"
        f" exit code {exit_code} {exited_at - sigterm_at:.2f}s after SIGTERM"
        f" (grace {GRACE_SECONDS}s); acknowledged={len(acknowledged)} present={len(present)}"
        f" lost={len(acknowledged) - len(present)}"
    )
    if exit_code != 0:
        print(server.output())

    # Every call the server had taken when SIGTERM came finished, and with OK.
    assert len(in_flight) >= WRITERS
    assert all(c.ok for c in before), code_counts(before)
    assert all(c.ended >= released_at for c in in_flight)  # they really waited for the lock
    # Once shutdown has begun, new calls are turned away with UNAVAILABLE.
    assert late and {c.code for c in late} == {grpc.StatusCode.UNAVAILABLE}, code_counts(late)
    assert {c.code for c in between} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    # A clean exit within the grace period, and nothing acknowledged went missing.
    assert exit_code == 0
    assert exited_at - sigterm_at < GRACE_SECONDS
    assert len(present) == len(acknowledged)
