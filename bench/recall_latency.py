"""Recall latency on the demo data, with and without interaction logging.

Starts `memory-service serve` as a separate process (so client and server do
not share an interpreter) twice on the same seeded database — once logging
recalls, once with FARADAY_LOG_RECALL_INTERACTIONS=false — and times
sequential RecallMemories calls from here over a real channel.

    .venv/bin/python bench/recall_latency.py [--calls 2000] [--database-url URL]

Without --database-url it uses a throwaway embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc

from memory_service.seed import USERS, seed_demo
from memory_service.storage import migrate
from memory_service.storage.embedded import start_embedded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_serving(target: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                await asyncio.wait_for(ch.channel_ready(), 1)
                return
        except (TimeoutError, grpc.aio.AioRpcError):
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on {target} did not start")


async def _time_recalls(target: str, calls: int, query: str) -> list[float]:
    async with grpc.aio.insecure_channel(target) as ch:
        stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
        requests = [
            memory_service_pb2.RecallMemoriesRequest(user_id=str(u[0]), query=query, limit=10)
            for u in USERS
        ]
        for r in requests * 50:  # warm up connections, plans and caches
            await stub.RecallMemories(r)
        samples = []
        for i in range(calls):
            start = time.perf_counter()
            await stub.RecallMemories(requests[i % len(requests)])
            samples.append((time.perf_counter() - start) * 1000)
        return samples


def _summary(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    mean = statistics.fmean(samples)
    return f"p50 {q[49]:.2f} ms  p95 {q[94]:.2f} ms  p99 {q[98]:.2f} ms  mean {mean:.2f} ms"


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "memory_service.cli", "serve"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faraday-bench-") as tmp:
        url = args.database_url or start_embedded(Path(tmp) / "pgdata")
        await migrate.upgrade(url)
        print("seeded:", await seed_demo(url))
        for log in (True, False):
            port = _free_port()
            env = {
                **os.environ,
                "FARADAY_DATABASE_URL": url,
                "FARADAY_PORT": str(port),
                "FARADAY_LOG_RECALL_INTERACTIONS": str(log).lower(),
                "FARADAY_POOL_SIZE": "4",
                "FARADAY_LOG_LEVEL": "WARNING",
            }
            server = _spawn(env)
            try:
                target = f"127.0.0.1:{port}"
                await _wait_serving(target)
                for query in ("", "lesson plans for fractions"):
                    samples = await _time_recalls(target, args.calls, query)
                    label = f"logging {'on ' if log else 'off'} query={query!r:30}"
                    print(f"{label} {_summary(samples)}", flush=True)
            finally:
                server.terminate()
                server.wait(15)


if __name__ == "__main__":
    asyncio.run(main())
