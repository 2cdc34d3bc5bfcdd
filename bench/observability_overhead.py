"""What metrics (and tracing) add to a call: StoreMemory and RecallMemories latency, off vs on.

One in-process server on a scratch database, one channel, calls one at a
time (latency, not throughput). Metrics recording is toggled between rounds
on the same server (the interceptor is always installed; recording is what
the setting turns on), alternating off/on so that drift hits both alike.
With --tracing a second server traces every call to a local OTLP receiver.

    PYTHONPATH=clients/python/src:. .venv/bin/python bench/observability_overhead.py \
        --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)

from memory_service.config import Settings
from memory_service.server import start
from memory_service.storage import migrate
from memory_service.telemetry import metrics
from tests.conftest import create_scratch_database, drop_scratch_database


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def _calls(channel: grpc.aio.Channel, user: str, n: int) -> dict[str, list[float]]:
    stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
    took: dict[str, list[float]] = {"store": [], "recall": []}
    for i in range(n):
        memory = memory_pb2.Memory(
            user_id=user, content=f"Fact {i} about {uuid.uuid4().hex[:6]}", category="fact"
        )
        started = time.perf_counter()
        await stub.StoreMemory(memory_service_pb2.StoreMemoryRequest(memory=memory))
        took["store"].append(time.perf_counter() - started)
        started = time.perf_counter()
        await stub.RecallMemories(
            memory_service_pb2.RecallMemoriesRequest(user_id=user, query="fact about", limit=10)
        )
        took["recall"].append(time.perf_counter() - started)
    return took


def _summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return f"median {statistics.median(ms):.3f} ms, p90 {ms[int(len(ms) * 0.9)]:.3f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url", required=True, help="a server where we may CREATE DATABASE"
    )
    parser.add_argument("--calls", type=int, default=500, help="of each kind, per round")
    parser.add_argument("--rounds", type=int, default=4, help="off/on pairs")
    parser.add_argument("--tracing", action="store_true", help="also measure tracing on")
    args = parser.parse_args()
    url = await create_scratch_database(args.database_url)
    try:
        await migrate.upgrade(url)
        settings = Settings(port=0, sweep_interval_seconds=0, metrics_port=0)
        running = await start(settings, migrate.app_role_url(url))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            admin = admin_service_pb2_grpc.AdminServiceStub(ch)
            user = (
                await admin.UpsertUser(
                    admin_service_pb2.UpsertUserRequest(
                        user=registry_pb2.User(email="bench@school.example.org")
                    )
                )
            ).id
            await _calls(ch, user, 200)  # warm-up: prepared statements, pools
            results: dict[str, dict[str, list[float]]] = {
                "off": {"store": [], "recall": []},
                "on": {"store": [], "recall": []},
            }
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    metrics._on = mode == "on"
                    for kind, took in (await _calls(ch, user, args.calls)).items():
                        results[mode][kind] += took
        await running.stop(1.0)
        for mode, kinds in results.items():
            for kind, took in kinds.items():
                print(f"metrics {mode:3} {kind:6} {_summary(took)}  ({len(took)} calls)")
        if args.tracing:
            import os

            sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
            threading.Thread(target=sink.serve_forever, daemon=True).start()
            os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink.server_port}"
            traced = await start(
                Settings(port=0, sweep_interval_seconds=0), migrate.app_role_url(url)
            )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{traced.port}") as ch:
                await _calls(ch, user, 200)
                took = await _calls(ch, user, args.calls * args.rounds)
            await traced.stop(1.0)
            sink.shutdown()
            for kind, samples in took.items():
                print(f"tracing on  {kind:6} {_summary(samples)}  ({len(samples)} calls)")
    finally:
        await drop_scratch_database(args.database_url, url)


if __name__ == "__main__":
    asyncio.run(main())
