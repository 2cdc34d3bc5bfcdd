"""What grpc.aio charges for the layers around each call, and what the garbage collector does.

    .venv/bin/python bench/per_call_layers.py            # ~1 minute, no database
    .venv/bin/python bench/per_call_layers.py --rounds 9

Each variant runs in a fresh process: a grpc.aio server (uvloop, as the
service) whose RecallMemories builds, per call, the response the service
builds for ten recalled memories (domain objects through
rpc/memory_messages.py), called at concurrency 16 by a client in the same
process. Client and server CPU per call are reported together; the client's
share is the same in every variant, so the differences are the server's.

Layers (two pass-through wrappers, as the service has two: observing and auth):
- `none`: the handler alone, the floor;
- `interceptors`: two grpc.aio ServerInterceptors, each caching its wrapped
  handler per method (what the service did before rpc/registration.py);
- `registration`: the same two wrappers applied once when the servicer is
  added, through rpc/registration.WrappingServer (what the service does).

Garbage collection, with the service's modules imported (its heap at rest):
every variant but one runs CPython's thresholds (700, 10, 10); `gc-settled`
is `none` after server.settle_garbage_collector(), as `serve` runs. The
collector's share of the process's CPU is measured with gc.callbacks.

Rounds interleave the variants; the median of each is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

VARIANTS = ("none", "interceptors", "registration", "gc-settled")


def _response() -> Any:
    from faraday.memory.v1 import memory_service_pb2

    from memory_service.domain.models import Memory, ScoredMemory
    from memory_service.rpc import memory_messages

    now = datetime.now(UTC)
    scored = [
        ScoredMemory(
            Memory(
                id=i,
                user_id=uuid.UUID(int=7),
                assistant_profile_id=None,
                content=f"prefers worked examples before practice sets, note {i}",
                context={"class": "7B", "unit": "fractions"},
                importance=0.5,
                category="preference",
                tags=["math", "style"],
                source="chat",
                confidence=None,
                version=1,
                created_at=now,
                updated_at=now,
                last_accessed=now,
                expires_at=None,
                metadata={},
            ),
            0.9,
            0.5,
            0.8,
            0.0,
        )
        for i in range(10)
    ]
    return memory_service_pb2.RecallMemoriesResponse(
        memories=[memory_messages.scored_message(s) for s in scored]
    )


def _pass_through(behavior: Any) -> Any:
    async def layer(request: Any, context: Any) -> Any:
        return await behavior(request, context)

    return layer


def _wrap(handler: Any, method: str) -> Any:
    import grpc

    return grpc.unary_unary_rpc_method_handler(
        _pass_through(handler.unary_unary),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _interceptor() -> Any:
    import grpc

    class PassThrough(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self._wrapped: dict[str, Any] = {}

        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            wrapped = self._wrapped.get(details.method)
            if wrapped is None:
                wrapped = self._wrapped[details.method] = _wrap(handler, details.method)
            return wrapped

    return PassThrough()


async def _measure(variant: str, calls: int) -> dict[str, float]:
    import grpc
    from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc

    from memory_service import server as service_server  # the service's heap
    from memory_service.rpc.registration import WrappingServer

    class Recall(memory_service_pb2_grpc.MemoryServiceServicer):
        async def RecallMemories(self, request: Any, context: Any) -> Any:
            return _response()

    interceptors = [_interceptor(), _interceptor()] if variant == "interceptors" else None
    server = grpc.aio.server(interceptors=interceptors)
    target: Any = server
    if variant == "registration":
        target = WrappingServer(server, (_wrap, _wrap))
    memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(Recall(), target)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    if variant == "gc-settled":
        service_server.settle_garbage_collector()
    collecting = [0.0, 0.0]  # started, total seconds

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting[0] = time.perf_counter()
        else:
            collecting[1] += time.perf_counter() - collecting[0]

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
        request = memory_service_pb2.RecallMemoriesRequest(user_id=str(uuid.UUID(int=7)))
        for _ in range(300):
            await stub.RecallMemories(request)

        async def caller() -> None:
            for _ in range(calls // 16):
                await stub.RecallMemories(request)

        gc.callbacks.append(on_gc)
        cpu = time.process_time()
        await asyncio.gather(*(caller() for _ in range(16)))
        cpu = time.process_time() - cpu
        gc.callbacks.remove(on_gc)
    await server.stop(None)
    done = (calls // 16) * 16
    return {"cpu_us_per_call": cpu / done * 1e6, "gc_share": collecting[1] / cpu}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=8000, help="calls per variant per round")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        import uvloop

        print(json.dumps(uvloop.run(_measure(args.variant, args.calls))))
        return
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--calls", str(args.calls)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[variant].append(json.loads(out.splitlines()[-1]))
    cpu = {v: statistics.median(r["cpu_us_per_call"] for r in results[v]) for v in VARIANTS}
    share = {v: statistics.median(r["gc_share"] for r in results[v]) for v in VARIANTS}
    print(f"median of {args.rounds} rounds, {args.calls} calls each, concurrency 16\n")
    print("| variant | CPU per call (client + server) | over `none` | GC share of CPU |")
    print("|---|---:|---:|---:|")
    for v in VARIANTS:
        over = cpu[v] - cpu["none"]
        print(f"| {v} | {cpu[v]:.1f} µs | {over:+.1f} µs | {100 * share[v]:.1f}% |")


if __name__ == "__main__":
    main()
