"""PostgreSQL stopped and started again while eight clients write.

Two ways to stop it: "fast" (pg_ctl's default: sessions are terminated, a
clean shutdown) and "immediate" (every process ends at once, as in a crash;
the restart recovers from the WAL).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from faraday.memory.v1 import admin_service_pb2_grpc, memory_service_pb2_grpc

from memory_service.server import start
from memory_service.storage import migrate
from tests.faults.conftest import (
    FAULT_SETTINGS,
    Call,
    PrivatePostgres,
    code_counts,
    new_call,
    present_ids,
    query,
    retry_failed,
    store,
)
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

WRITERS = 8
CALL_TIMEOUT = 5.0  # client deadline; a call that hangs shows up as DEADLINE_EXCEEDED
FAST = 3.0  # no call, failed or not, may take longer than this
OUTAGE_SECONDS = 2.0
RECOVERY_SECONDS = 5.0  # after PostgreSQL is back, successes must resume within this


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restart_under_write_load_loses_no_acknowledged_write(
    private_postgres: PrivatePostgres, mode: str
) -> None:
    pg = private_postgres
    running = await start(FAULT_SETTINGS, migrate.app_role_url(pg.owner_url))
    calls: list[Call] = []
    done = asyncio.Event()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)

            async def writer() -> None:
                while not done.is_set():
                    call = new_call("pg-restart")
                    calls.append(call)
                    await store(stub, user, call, CALL_TIMEOUT)
                    if not call.ok:
                        await asyncio.sleep(0.05)  # a client's backoff, not a busy loop

            writers = [asyncio.create_task(writer()) for _ in range(WRITERS)]
            try:
                await asyncio.sleep(1.5)
                stopping = time.monotonic()
                await asyncio.to_thread(pg.stop, mode)
                down = time.monotonic()
                await asyncio.sleep(OUTAGE_SECONDS)
                restarting = time.monotonic()
                await asyncio.to_thread(pg.start)
                up = time.monotonic()
                while not any(c.ok and c.started >= up for c in calls):
                    assert time.monotonic() - up < RECOVERY_SECONDS + 5, "no success resumed"
                    await asyncio.sleep(0.02)
                recovered = min(c.ended for c in calls if c.ok and c.started >= up)
                await asyncio.sleep(1.0)  # steady state again
            finally:
                done.set()
                await asyncio.gather(*writers)

            acknowledged = [c for c in calls if c.ok]
            failed = [c for c in calls if not c.ok]
            # "Ambiguous": under way when PostgreSQL went away, so the client
            # cannot know whether it committed.
            ambiguous = [c for c in failed if c.started < down]
            # Wholly inside the outage: a call begun just before the restart
            # may still be connecting when PostgreSQL is back, and succeed.
            while_down = [c for c in calls if down <= c.started and c.ended < restarting]
            present = await present_ids(pg.owner_url, (c.memory_id for c in acknowledged))
            lost = len(acknowledged) - len(present)
            slowest = max(c.seconds for c in calls)
            slowest_failure = max((c.seconds for c in failed), default=0.0)
            print(
                f"\n[pg {mode}] calls={len(calls)} acknowledged={len(acknowledged)}"
                f" failed={len(failed)} codes={code_counts(calls)}"
                f"\n[pg {mode}] stop took {down - stopping:.2f}s, down {restarting - down:.2f}s,"
                f" start took {up - restarting:.2f}s;"
                f" failed while down={sum(not c.ok for c in while_down)}"
                f" (codes {code_counts(while_down)})"
                f"\n[pg {mode}] slowest call={slowest:.3f}s slowest failure={slowest_failure:.3f}s"
                f" recovered {recovered - up:.2f}s after PostgreSQL was back"
                f"\n[pg {mode}] acknowledged={len(acknowledged)} present={len(present)} lost={lost}"
            )

            # While PostgreSQL is down, calls fail fast and say UNAVAILABLE.
            assert while_down and all(not c.ok for c in while_down)
            assert {c.code for c in failed} == {grpc.StatusCode.UNAVAILABLE}, code_counts(failed)
            assert slowest < FAST
            # The pool heals by itself.
            assert recovered - up < RECOVERY_SECONDS
            assert any(c.ok and c.started >= recovered for c in calls)
            # Nothing acknowledged is lost.
            assert lost == 0

            # A failed StoreMemory may have committed all the same: retrying it
            # with its request id must give exactly one row, never two.
            outcome = await retry_failed(stub, user, pg.owner_url, calls)
            # Replaying acknowledged requests stores nothing new either.
            replayed = acknowledged[:: max(1, len(acknowledged) // 20)]
            for call in replayed:
                first_id = call.memory_id
                await store(stub, user, call, CALL_TIMEOUT)
                assert call.ok and call.memory_id == first_id
            total = (await query(pg.owner_url, "SELECT count(*) AS n FROM user_memories"))[0]["n"]
            duplicates = total - len(calls)
            print(
                f"[pg {mode}] failed={outcome['failed']} ambiguous={len(ambiguous)}"
                f" of which committed despite the error={outcome['committed']}"
                f" retried_ok={outcome['retried_ok']} replayed_acknowledged={len(replayed)}"
                f" rows={total} requests={len(calls)} duplicates={duplicates}"
            )
            assert duplicates == 0
    finally:
        await running.stop(1.0)
