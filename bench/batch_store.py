"""Batch store against single stores: memories per second, over real gRPC.

    .venv/bin/python bench/batch_store.py                 # both model settings, 20 rounds
    .venv/bin/python bench/batch_store.py --rounds 5 --models none

Starts a throwaway embedded PostgreSQL 18 (bench/pg.py) and `memory-service
serve` in its own process for each embedding model setting ("none", and the
built-in wordllama-l2-supercat-256 whose vectors the server computes), then
for each round stores 100 new memories (distinct contents, the default EXACT
dedup policy, one user per round) three ways, in turn:

- `single`: 100 StoreMemory calls one after the other (one client, in order);
- `single x16`: the same 100 calls, 16 in flight at a time;
- `batch`: one BatchStoreMemories call of the 100.

and prints the median memories per second of each. Not part of `make bench`
(bench/run.py's cells measure per-call latency under load); this answers one
question: what does batching save per memory.
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
import uuid
from pathlib import Path

import asyncpg
import grpc
from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.pg import Embedded  # noqa: E402
from memory_service.storage import migrate  # noqa: E402

BATCH = 100
WORDS = [
    "fractions",
    "decimals",
    "ratio",
    "poster",
    "quiz",
    "lab",
    "choir",
    "chess",
    "garden",
    "reading",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _requests(user: str, tag: str) -> list[memory_service_pb2.StoreMemoryRequest]:
    return [
        memory_service_pb2.StoreMemoryRequest(
            memory=memory_pb2.Memory(
                user_id=user,
                content=f"Note {tag}-{i}: the class liked the {WORDS[i % 10]} activity"
                f" with {WORDS[(i * 7) % 10]} on day {i}.",
                category="observation",
                tags=[WORDS[i % 10]],
            )
        )
        for i in range(BATCH)
    ]


async def _round(
    stub: memory_service_pb2_grpc.MemoryServiceStub, users: list[str], how: str
) -> float:
    requests = _requests(users.pop(), uuid.uuid4().hex[:6])
    start = time.perf_counter()
    if how == "single":
        for r in requests:
            await stub.StoreMemory(r)
    elif how == "single x16":
        gate = asyncio.Semaphore(16)

        async def one(r: memory_service_pb2.StoreMemoryRequest) -> None:
            async with gate:
                await stub.StoreMemory(r)

        await asyncio.gather(*(one(r) for r in requests))
    else:
        response = await stub.BatchStoreMemories(
            memory_service_pb2.BatchStoreMemoriesRequest(requests=requests)
        )
        created = memory_service_pb2.STORE_OUTCOME_CREATED
        assert all(r.outcome == created for r in response.results)
    return BATCH / (time.perf_counter() - start)


async def _measure(url: str, model: str, rounds: int, logs: Path) -> dict[str, float]:
    owner = await asyncpg.connect(url)
    try:
        rows = await owner.fetch(
            "INSERT INTO users (email) SELECT 'b' || g || '-' || $1 || '@bench.example.org'"
            " FROM generate_series(1, $2) g RETURNING id",
            model.replace("-", ""),
            rounds * 3 + 1,
        )
        users = [str(r["id"]) for r in rows]
    finally:
        await owner.close()
    port = _free_port()
    env = {
        **os.environ,
        "FARADAY_DATABASE_URL": migrate.app_role_url(url),
        "FARADAY_EMBEDDING_MODEL": model,
        "FARADAY_LOG_LEVEL": "WARNING",
    }
    with open(logs / f"service-{model}.log", "wb") as log:  # noqa: ASYNC230 (a bench script)
        process = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "memory_service.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 60)
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
            await _round(stub, users, "batch")  # warm-up: connections, prepared statements
            rates: dict[str, list[float]] = {"single": [], "single x16": [], "batch": []}
            for _ in range(rounds):
                for how, got in rates.items():
                    got.append(await _round(stub, users, how))
    finally:
        process.terminate()
        process.wait(10)
    return {how: statistics.median(got) for how, got in rates.items()}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["none", "wordllama-l2-supercat-256"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faraday-batch-bench-") as tmp:
        pg = Embedded.start(Path(tmp))
        try:
            await migrate.upgrade(pg.url)
            for model in args.models:
                rates = await _measure(pg.url, model, args.rounds, Path(tmp))
                cells = ", ".join(f"{how} {rate:,.0f}/s" for how, rate in rates.items())
                print(f"embedding model {model}: memories stored per second: {cells}")
                print(f"  batch / single: {rates['batch'] / rates['single']:.1f}x", flush=True)
        finally:
            pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
