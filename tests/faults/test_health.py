"""Readiness follows PostgreSQL: NOT_SERVING while it is stopped, SERVING once it is back.

Over a real channel, with a real `pg_ctl stop` and start of a private
PostgreSQL: the overall status ("") and each service's turn NOT_SERVING
within a few probe intervals, a Watch stream sees both changes, and liveness
stays SERVING throughout (restarting the process would not help).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memory_service.health import LIVENESS_HEALTH
from memory_service.server import READINESS_NAMES, start
from memory_service.storage import migrate
from tests.faults.conftest import FAULT_SETTINGS, PrivatePostgres

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROBE_SECONDS = 0.5
NOTICED_WITHIN = 4 * PROBE_SECONDS + 1.0  # a probe's interval and timeout, with room


async def _statuses(stub: health_pb2_grpc.HealthStub) -> dict[str, int]:
    names = (*READINESS_NAMES, LIVENESS_HEALTH)
    answers = [
        await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2) for name in names
    ]
    return {name: answer.status for name, answer in zip(names, answers, strict=True)}


async def _until(stub: health_pb2_grpc.HealthStub, readiness: int, within: float) -> float:
    """Seconds until every readiness name reports `readiness` (liveness always SERVING)."""
    started = time.monotonic()
    while True:
        statuses = await _statuses(stub)
        assert statuses[LIVENESS_HEALTH] == SERVING, statuses
        if all(statuses[name] == readiness for name in READINESS_NAMES):
            return time.monotonic() - started
        assert time.monotonic() - started < within, statuses
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_health_turns_not_serving_while_postgres_is_down_and_back_after(
    private_postgres: PrivatePostgres,
) -> None:
    pg = private_postgres
    settings = FAULT_SETTINGS.with_overrides(health_probe_interval_seconds=PROBE_SECONDS)
    running = await start(settings, migrate.app_role_url(pg.owner_url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert set((await _statuses(stub)).values()) == {SERVING}
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            seen: list[int] = []

            async def follow() -> None:
                async for change in watch:
                    seen.append(change.status)

            watching = asyncio.create_task(follow())
            try:
                await asyncio.to_thread(pg.stop, "fast")
                down = await _until(stub, NOT_SERVING, NOTICED_WITHIN)
                await asyncio.to_thread(pg.start)
                up = await _until(stub, SERVING, NOTICED_WITHIN)
                await asyncio.sleep(0.1)  # the last change reaches the stream
            finally:
                watch.cancel()
                watching.cancel()
                await asyncio.gather(watching, return_exceptions=True)
            print(f"\nNOT_SERVING {down:.2f}s after the stop; SERVING {up:.2f}s after the start")
            assert seen == [SERVING, NOT_SERVING, SERVING]
    finally:
        await running.stop(1.0)
