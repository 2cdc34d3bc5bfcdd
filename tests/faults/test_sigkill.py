"""SIGKILL of the server during a stream of writes: every acknowledged write survives.

An acknowledged StoreMemory has committed, and PostgreSQL keeps a commit once
it has acknowledged it only with synchronous_commit on (the default), which
the test checks first. Calls cut off by the kill are ambiguous to the client;
retrying them with their request ids on the restarted server stores each
exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2_grpc,
    memory_service_pb2,
    memory_service_pb2_grpc,
)

from tests.faults.conftest import (
    Call,
    ServerProcess,
    Urls,
    code_counts,
    new_call,
    present_ids,
    query,
    retry_failed,
    store,
)
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

CALL_TIMEOUT = 3.0
BURST = 4  # concurrent calls per burst


@pytest.mark.slow
async def test_sigkill_of_the_server_loses_no_acknowledged_write(
    migrated_database: Urls, server_process: ServerProcess
) -> None:
    urls, server = migrated_database, server_process
    as_owner = (await query(urls.owner, "SHOW synchronous_commit"))[0][0]
    as_service = (await query(urls.app, "SHOW synchronous_commit"))[0][0]
    print(f"\n[sigkill] synchronous_commit: owner={as_owner!r} service role={as_service!r}")
    assert as_owner == as_service == "on"

    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).uniform(0.5, 2.5)
    calls: list[Call] = []
    killed = asyncio.Event()
    target = await server.start()
    async with grpc.aio.insecure_channel(target) as channel:
        user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

        async def sequential() -> None:
            while not killed.is_set():
                call = new_call("sigkill-seq")
                calls.append(call)
                if not (await store(stub, user, call, CALL_TIMEOUT)).ok:
                    return

        async def bursts() -> None:
            while not killed.is_set():
                batch = [new_call("sigkill-burst") for _ in range(BURST)]
                calls.extend(batch)
                done = await asyncio.gather(*(store(stub, user, c, CALL_TIMEOUT) for c in batch))
                if not all(c.ok for c in done):
                    return

        tasks = [asyncio.create_task(sequential()), asyncio.create_task(bursts())]
        try:
            await asyncio.sleep(kill_after)
            killed_at = time.monotonic()
            server.signal(signal.SIGKILL)
            assert await server.wait(10.0) == -signal.SIGKILL
        finally:
            killed.set()
            await asyncio.gather(*tasks)

    codes = code_counts(calls)  # before the retries below change them
    acknowledged = [c for c in calls if c.ok]
    failed = [c for c in calls if not c.ok]
    cut_off = [c for c in failed if c.started < killed_at]  # ambiguous to the client
    assert all(c.ok for c in calls if c.ended < killed_at), "failures before the kill"
    assert {c.code for c in failed} <= {grpc.StatusCode.UNAVAILABLE}, code_counts(failed)

    restarted_at = time.monotonic()
    target = await server.start()
    back_after = time.monotonic() - restarted_at
    present = await present_ids(urls.owner, (c.memory_id for c in acknowledged))
    lost = len(acknowledged) - len(present)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        if acknowledged:  # the restarted server serves the last acknowledged write
            last = max(acknowledged, key=lambda c: c.ended)
            got = await stub.GetMemory(
                memory_service_pb2.GetMemoryRequest(id=last.memory_id), timeout=CALL_TIMEOUT
            )
            assert got.content == last.content
        outcome = await retry_failed(stub, user, urls.owner, calls)
    total = (await query(urls.owner, "SELECT count(*) FROM user_memories"))[0][0]
    print(
        f"[sigkill] seed={seed} killed {kill_after:.2f}s into the stream; calls={len(calls)}"
        f" ({codes}); restarted in {back_after:.2f}s"
        f"\n[sigkill] acknowledged={len(acknowledged)} present={len(present)} lost={lost}"
        f"\n[sigkill] failed={outcome['failed']} ambiguous(cut off by the kill)={len(cut_off)}"
        f" of which committed anyway={outcome['committed']} retried_ok={outcome['retried_ok']}"
        f" rows={total} requests={len(calls)} duplicates={total - len(calls)}"
    )
    assert acknowledged, "nothing was acknowledged before the kill"
    assert lost == 0
    assert total == len(calls)  # each request exactly once, retries included
