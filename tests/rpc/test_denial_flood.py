"""Denied calls cannot flood anything: not the audit log, not the other callers.

A server with the default denied-call budget listens on [::] (dual stack)
with one service token. A separate process floods it over IPv4 with
10,000 calls carrying a bad token, while a good caller, over IPv6 (another
peer address, so another budget), keeps calling. The test prints the
database growth and the good caller's latency before and during the flood.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)

from memory_service.auth import token_hash
from memory_service.config import Settings
from memory_service.server import RunningServer, start
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")

FLOOD_CALLS = 10_000
FLOOD_THREADS = 1
DEFAULTS = Settings()

# Runs in its own process, so the flood's client work does not share the
# event loop of the server and the good caller.
_FLOOD = """
import sys, threading, collections, grpc
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
target, calls, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
codes = collections.Counter()
lock = threading.Lock()
def run(n):
    with grpc.insecure_channel(target) as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        for _ in range(n):
            try:
                stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=1),
                               metadata=(("authorization", "Bearer not-a-token"),), timeout=10)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            with lock:
                codes[code] += 1
workers = [threading.Thread(target=run, args=(calls // threads,)) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(dict(codes))
"""


@pytest.fixture
async def guarded_server(app_url: str, tmp_path: Path) -> AsyncIterator[tuple[RunningServer, str]]:
    token = f"fmt_{uuid.uuid4().hex}"
    path = tmp_path / "tokens.json"
    entry = {
        "name": "backend",
        "sha256": token_hash(token),
        "scopes": ["memories:read", "memories:write", "admin"],
    }
    path.write_text(json.dumps({"tokens": [entry]}))
    settings = TEST_SETTINGS.with_overrides(
        host="[::]",
        service_tokens_file=path,
        # The shipped defaults, not the suite's relaxed budget.
        denied_calls_per_second=DEFAULTS.denied_calls_per_second,
        denied_calls_burst=DEFAULTS.denied_calls_burst,
        audit_refusals_interval_seconds=3600.0,
    )
    running = await start(settings, app_url)
    yield running, token
    await running.stop(1.0)


# Another caller, also in its own process: sequential GetMemory calls with a
# good token for the given seconds; prints each call's latency in ms.
_CALLER = """
import json, sys, time, grpc
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
target, token, memory_id, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
samples = []
with grpc.insecure_channel(target) as channel:
    stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
    request = memory_service_pb2.GetMemoryRequest(id=memory_id)
    metadata = (("authorization", "Bearer " + token),)
    stub.GetMemory(request, metadata=metadata, timeout=10)  # connect before measuring
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        stub.GetMemory(request, metadata=metadata, timeout=10)
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)
print(json.dumps(samples))
"""


async def _run(script: str, *args: object) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *map(str, args), stdout=subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode()


async def _sizes(conn: asyncpg.Connection) -> tuple[int, int, int]:
    await conn.execute("CHECKPOINT")
    row = await conn.fetchrow(
        "SELECT pg_database_size(current_database()) AS db,"
        " pg_total_relation_size('audit_log') AS audit, count(*) AS rows FROM audit_log"
    )
    assert row is not None
    return row["db"], row["audit"], row["rows"]


@pytest.mark.slow
async def test_ten_thousand_bad_token_calls_cost_little(
    guarded_server: tuple[RunningServer, str], database_url: str
) -> None:
    running, token = guarded_server
    async with grpc.aio.insecure_channel(f"[::1]:{running.port}") as good:
        admin = admin_service_pb2_grpc.AdminServiceStub(good)
        memories = memory_service_pb2_grpc.MemoryServiceStub(good)
        auth = (("authorization", f"Bearer {token}"),)
        user = await admin.UpsertUser(
            admin_service_pb2.UpsertUserRequest(
                user=registry_pb2.User(email=f"flood-{uuid.uuid4().hex[:6]}@school.example.org")
            ),
            metadata=auth,
        )
        memory = await memories.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory={"user_id": user.id, "content": "likes quiet rooms", "category": "fact"}
            ),
            metadata=auth,
        )
        conn = await asyncpg.connect(database_url)
        try:
            before = await _sizes(conn)
            good = (f"[::1]:{running.port}", token, memory.id)
            baseline = json.loads(await _run(_CALLER, *good, 2.0))
            started = time.monotonic()
            flood = asyncio.ensure_future(
                _run(_FLOOD, f"127.0.0.1:{running.port}", FLOOD_CALLS, FLOOD_THREADS)
            )
            during: list[float] = []
            while not flood.done():
                during += json.loads(await _run(_CALLER, *good, 1.0))
            codes = json.loads((await flood).replace("'", '"'))
            flood_seconds = time.monotonic() - started
            await running.interceptor.record_refusals()
            after = await _sizes(conn)
        finally:
            await conn.close()

    p50_before, p50_during = statistics.median(baseline), statistics.median(during)
    print(
        f"\nflood: {FLOOD_CALLS} bad-token calls in {flood_seconds:.1f} s from {FLOOD_THREADS}"
        f" threads: {codes}\ndatabase grew {after[0] - before[0]} bytes, audit_log"
        f" {after[1] - before[1]} bytes, {after[2] - before[2]} audit rows\n"
        f"good caller GetMemory p50 {p50_before:.2f} ms before ({len(baseline)} calls),"
        f" {p50_during:.2f} ms during ({len(during)} calls), ratio {p50_during / p50_before:.2f}"
    )
    assert sum(codes.values()) == FLOOD_CALLS
    assert set(codes) <= {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED"}
    # Only the budget's worth is heard: the burst plus one a second.
    heard = codes.get("UNAUTHENTICATED", 0)
    assert (
        heard <= DEFAULTS.denied_calls_burst + flood_seconds * DEFAULTS.denied_calls_per_second + 2
    )
    assert after[0] - before[0] < 1024 * 1024
    # One row per heard denial, one aggregated row for the refused ones.
    assert after[2] - before[2] == heard + 1
    assert len(during) >= 20
    assert p50_during <= 2 * p50_before


async def test_denials_with_a_valid_credential_spend_its_rate_limit(
    app_url: str, tmp_path: Path
) -> None:
    """A caller cannot spin on PERMISSION_DENIED for free: each denial costs it a call."""
    token = f"fmt_{uuid.uuid4().hex}"
    path = tmp_path / "tokens.json"
    entry = {"name": "reader", "sha256": token_hash(token), "scopes": ["memories:read"]}
    path.write_text(json.dumps({"tokens": [entry]}))
    settings = TEST_SETTINGS.with_overrides(
        service_tokens_file=path, rate_limit_per_second=0.5, rate_limit_burst=3
    )
    running = await start(settings, app_url)
    auth = (("authorization", f"Bearer {token}"),)
    codes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            memories = memory_service_pb2_grpc.MemoryServiceStub(ch)
            for request in [memory_service_pb2.DeleteMemoryRequest(id=1)] * 3:  # no write scope
                try:
                    await memories.DeleteMemory(request, metadata=auth)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
            try:  # allowed by scope, but the burst went on the denials
                await memories.GetMemory(memory_service_pb2.GetMemoryRequest(id=1), metadata=auth)
            except grpc.aio.AioRpcError as error:
                codes.append(error.code())
    finally:
        await running.stop(0.5)
    assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
