"""Stateless service replicas behind client-side round robin (docs/scaling.md).

Two `memory-service serve` processes on one database, one client channel
over both with gRPC's `round_robin` policy: calls spread over both, what one
stored the other answers at once, and when one stops the other answers
everything, no call failing.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
from pathlib import Path

import grpc
import pytest
from faraday.memory.v1 import admin_service_pb2_grpc
from faraday_memory_client import MemoryClient

from tests.faults.conftest import ServerProcess, Urls
from tests.rpc.helpers import register_user

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.slow]

METHODS = (
    "/faraday.memory.v1.MemoryService/StoreMemory",
    "/faraday.memory.v1.MemoryService/GetMemory",
)


def answered(server: ServerProcess) -> int:
    """StoreMemory and GetMemory calls the server's access log shows it answered."""
    lines = server.output().splitlines()
    return sum(any(f"{m} OK" in line for m in METHODS) for line in lines)


async def answered_once_logged(servers: list[ServerProcess], calls: int) -> list[int]:
    """answered() of each server once their lines add up to `calls`, or after 5 s.

    A server writes a call's access line on its loop's next turn, after the
    response has gone (rpc/observing.py): the client may read the log first.
    """
    for _ in range(50):
        counts = [answered(s) for s in servers]
        if sum(counts) >= calls:
            break
        await asyncio.sleep(0.1)
    return counts


async def test_round_robin_spreads_calls_and_survives_a_stopped_replica(
    migrated_database: Urls,
) -> None:
    with tempfile.TemporaryDirectory(prefix="faraday-replicas-") as tmp:
        replicas = [
            ServerProcess(migrated_database.app, Path(tmp) / str(n), "--log-level", "INFO")
            for n in range(2)
        ]
        try:
            for n, replica in enumerate(replicas):
                (Path(tmp) / str(n)).mkdir()
                await replica.start()
            target = "ipv4:" + ",".join(r.target for r in replicas)
            async with grpc.aio.insecure_channel(replicas[0].target) as channel:
                user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
            async with MemoryClient(target, load_balancing="round_robin") as client:
                # Each stored memory is read back at once, by whichever replica.
                for n in range(20):
                    stored = await client.store_memory(
                        user_id=user, content=f"fact number {n}", category="fact"
                    )
                    assert (await client.get_memory(stored.id)).content == f"fact number {n}"
                counts = await answered_once_logged(replicas, 40)
                assert sum(counts) == 40 and min(counts) >= 10, counts

                replicas[0].signal(signal.SIGTERM)
                assert await replicas[0].wait(within_seconds=15) == 0
                before = answered(replicas[1])
                for _ in range(20):  # retries cover the moment the stop is noticed
                    assert (await client.get_memory(stored.id)).id == stored.id
                after = await answered_once_logged(replicas[1:], before + 20)
                assert after == [before + 20]
        finally:
            for replica in replicas:
                replica.close()
