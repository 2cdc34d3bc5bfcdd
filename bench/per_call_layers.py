"""What grpc.aio charges for layers around each call: interceptors vs wrapping at registration.

    .venv/bin/python bench/per_call_layers.py            # ~1 minute, no database
    .venv/bin/python bench/per_call_layers.py --rounds 40

Three grpc.aio servers in one process (uvloop, as the service), each with a
RecallMemories that builds, per call, the response the service builds for
ten recalled memories (domain objects through rpc/memory_messages.py):

- `none`: the handler alone, the floor;
- `interceptors`: two grpc.aio ServerInterceptors, each caching its wrapped
  handler per method (what the service does);
- `registration`: the same two pass-through wrappers applied once, when the
  servicer is added (what the service could do instead: its two layers,
  observing and auth, need only the method's name and handler).

A client in the same process calls them at concurrency 16 in short batches,
the three servers in turn, round after round, so that the machine's drift
(frequency, neighbours) falls on all three alike; the process's CPU per call
(client and server together: the client's share is the same for all three)
is the median over rounds. The garbage collector's part is measured in the
real service by bench/gc_share.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

VARIANTS = ("none", "interceptors", "registration")


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


class _WrappingServer:
    """What add_*Servicer_to_server is given instead of the server: registers
    every handler wrapped twice by _wrap, once, at registration."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def _twice(self, handler: Any, method: str) -> Any:
        return _wrap(_wrap(handler, method), method)

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        import grpc

        wrap = self._twice

        class Wrapped(grpc.GenericRpcHandler):  # type: ignore[type-arg]
            def __init__(self, inner: Any) -> None:
                self._inner, self._cache = inner, {}

            def service(self, details: Any) -> Any:
                cached = self._cache.get(details.method)
                if cached is None:
                    handler = self._inner.service(details)
                    if handler is None:
                        return None
                    cached = self._cache[details.method] = wrap(handler, details.method)
                return cached

        self._server.add_generic_rpc_handlers(tuple(Wrapped(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._twice(h, f"/{service}/{name}") for name, h in handlers.items()}
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


async def _measure(rounds: int, calls: int) -> dict[str, list[float]]:
    import grpc
    from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc

    class Recall(memory_service_pb2_grpc.MemoryServiceServicer):
        async def RecallMemories(self, request: Any, context: Any) -> Any:
            return _response()

    stubs, servers, channels = {}, [], []
    for variant in VARIANTS:
        interceptors = [_interceptor(), _interceptor()] if variant == "interceptors" else None
        server = grpc.aio.server(interceptors=interceptors)
        target: Any = server
        if variant == "registration":
            target = _WrappingServer(server)
        memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(Recall(), target)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stubs[variant] = memory_service_pb2_grpc.MemoryServiceStub(channel)
        servers.append(server)
        channels.append(channel)
    request = memory_service_pb2.RecallMemoriesRequest(user_id=str(uuid.UUID(int=7)))

    async def batch(stub: Any, each: int) -> None:
        for _ in range(each):
            await stub.RecallMemories(request)

    each = max(1, calls // 16)
    for stub in stubs.values():  # warm up
        await asyncio.gather(*(batch(stub, 20) for _ in range(16)))
    per_call: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant, stub in stubs.items():
            cpu = time.process_time()
            await asyncio.gather(*(batch(stub, each) for _ in range(16)))
            per_call[variant].append((time.process_time() - cpu) / (each * 16) * 1e6)
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(None)
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--calls", type=int, default=800, help="calls per server per round")
    args = parser.parse_args()
    import uvloop

    per_call = uvloop.run(_measure(args.rounds, args.calls))
    median = {v: statistics.median(per_call[v]) for v in VARIANTS}
    print(f"{args.rounds} rounds of {args.calls} calls per server, concurrency 16\n")
    print("| layers | CPU per call (client + server), median | over `none` |")
    print("|---|---:|---:|")
    for v in VARIANTS:
        print(f"| {v} | {median[v]:.1f} µs | {median[v] - median['none']:+.1f} µs |")


if __name__ == "__main__":
    main()
