"""The garbage collector's share of the real service's CPU under recall load, default vs settled.

    .venv/bin/python bench/gc_share.py --database-url postgresql://postgres@127.0.0.1:5432/DB
    .venv/bin/python bench/gc_share.py --database-url URL --user-id UUID --seconds 10 --rounds 3

`memory-service serve` runs in a child process with gc.callbacks timing
every collection; the parent recalls (no query, limit 10) for one user at
concurrency 16 and reads the child's CPU (/proc) and collection time before
and after. Variant `default` replaces server.settle_garbage_collector with a
no-op (CPython's thresholds, nothing frozen); `settled` is the service as
shipped. The database must be migrated and hold memories for the user
(default: the first user of `memory-service seed-demo`, to which this adds
200 memories if it has fewer). Rounds interleave the variants.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

SEED_USER = "00000000-0000-4000-8000-000000000001"


def _serve(variant: str, port: int, report: Path) -> None:
    """The child: the service, with its collections timed into `report` every 0.2 s."""
    totals = {"collections": 0, "seconds": 0.0, "full": 0}
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        totals["collections"] += 1
        totals["full"] += info["generation"] == 2
        totals["seconds"] += time.perf_counter() - started[0]

    def write() -> None:
        while True:
            report.write_text(json.dumps({**totals, "cpu": time.process_time()}))
            time.sleep(0.2)

    gc.callbacks.append(on_gc)
    threading.Thread(target=write, daemon=True).start()
    from memory_service import server

    if variant == "default":
        server.settle_garbage_collector = lambda: None  # type: ignore[assignment]
    from memory_service.cli import main

    sys.argv = ["memory-service", "serve", "--port", str(port)]
    main()


def _read(report: Path) -> dict[str, float]:
    data: dict[str, float] = json.loads(report.read_text())  # a few bytes: no thread for it
    return data


def _wait_listening(child: subprocess.Popen[bytes], port: int) -> None:
    """Until the service accepts connections; RuntimeError if it exits or takes a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the service exited with status {child.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("the service did not listen within 60 s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(port: int, user: str, seconds: float, report: Path) -> dict[str, float]:
    import grpc
    from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 60)
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        request = memory_service_pb2.RecallMemoriesRequest(user_id=user, limit=10)
        have = len((await stub.RecallMemories(request)).memories)
        if have < 10:
            for i in range(200):
                memory = memory_pb2.Memory(
                    user_id=user,
                    content=f"bench note {i}: prefers worked examples",
                    category="preference",
                    importance=0.5,
                )
                await stub.StoreMemory(memory_service_pb2.StoreMemoryRequest(memory=memory))
        for _ in range(300):  # warm up
            await stub.RecallMemories(request)
        calls = 0
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal calls
            while time.perf_counter() < deadline:
                await stub.RecallMemories(request)
                calls += 1

        before = _read(report)
        await asyncio.gather(*(caller() for _ in range(16)))
        await asyncio.sleep(0.3)  # the child's next report
        after = _read(report)
    cpu = after["cpu"] - before["cpu"]
    return {
        "cpu_ms_per_call": cpu * 1000 / calls,
        "gc_share": (after["seconds"] - before["seconds"]) / cpu,
        "full_collections": after["full"] - before["full"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", required=True, help="the service's FARADAY_DATABASE_URL")
    parser.add_argument("--user-id", default=SEED_USER)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=("default", "settled"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port, args.report)
        return
    env = {
        **os.environ,
        "FARADAY_DATABASE_URL": args.database_url,
        "FARADAY_SWEEP_INTERVAL_SECONDS": "0",
        "FARADAY_PARTITION_INTERVAL_SECONDS": "0",
    }
    results: dict[str, list[dict[str, float]]] = {"default": [], "settled": []}
    for _ in range(args.rounds):
        for variant in results:
            port = _free_port()
            report = Path(f"/tmp/gc_share-{os.getpid()}-{variant}.json")
            log = report.with_suffix(".log")
            report.unlink(missing_ok=True)
            argv = [sys.executable, __file__, "--database-url", args.database_url]
            argv += ["--serve", variant, "--port", str(port), "--report", str(report)]
            with log.open("wb") as out:
                child = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                _wait_listening(child, port)
                results[variant].append(
                    asyncio.run(_load(port, args.user_id, args.seconds, report))
                )
            except Exception:
                # The service never answered (a wrong URL, an unmigrated
                # database): its own words, not just a timeout.
                print(log.read_text()[-2000:], file=sys.stderr)
                raise
            finally:
                child.terminate()
                child.wait(30)
                report.unlink(missing_ok=True)
                log.unlink(missing_ok=True)
    print(f"median of {args.rounds} rounds of {args.seconds:g} s, recall at concurrency 16\n")
    print("| garbage collector | server CPU per recall | GC share of it | full collections |")
    print("|---|---:|---:|---:|")
    for variant, rows in results.items():
        cpu = statistics.median(r["cpu_ms_per_call"] for r in rows)
        share = statistics.median(r["gc_share"] for r in rows)
        full = statistics.median(r["full_collections"] for r in rows)
        print(f"| {variant} | {cpu:.3f} ms | {100 * share:.1f}% | {full:g} |")


if __name__ == "__main__":
    main()
