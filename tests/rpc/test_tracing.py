"""OpenTelemetry tracing end to end: a real server exports to a real OTLP/HTTP receiver.

The receiver is a tiny http.server in this process that accepts POST
/v1/traces and decodes the ExportTraceServiceRequest protobuf, as an
OpenTelemetry collector would. A StoreMemory call that carries a W3C
traceparent must produce spans of that trace: the RPC's (a child of the
caller's span), one per SQL statement and, where the server embeds
memories (pgvector and the built-in model), the embedding step's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)

pytest.importorskip("opentelemetry.sdk", reason="the `tracing` extra is not installed")
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from memory_service.server import start
from memory_service.telemetry import tracing
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")

STORE = "/faraday.memory.v1.MemoryService/StoreMemory"


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)


class _Receiver(BaseHTTPRequestHandler):
    spans: list[Span]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        status = 404
        if self.path == "/v1/traces":
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        self.server.spans.append(  # type: ignore[attr-defined]
                            Span(
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.name,
                                {a.key: a.value for a in s.attributes},
                            )
                        )
            status = 200
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[Span]]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    httpd.spans = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", httpd.spans  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture
async def traced(
    receiver: tuple[str, list[Span]],
    app_url: str,
    has_pgvector: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[grpc.aio.Channel, list[Span], Any]]:
    endpoint, spans = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "faraday-memory-test")
    settings = TEST_SETTINGS.with_overrides(
        embedding_model="wordllama-l2-supercat-256" if has_pgvector else None
    )
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            yield ch, spans, running
    finally:
        await running.stop(1.0)
    assert isinstance(tracing.span("after"), contextlib.nullcontext)  # off again


async def test_store_memory_spans_share_the_callers_trace(traced: Any, has_pgvector: bool) -> None:
    channel, spans, running = traced
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    user = await admin.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(email=f"t-{uuid.uuid4().hex[:8]}@school.example.org")
        )
    )
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    memory = memory_pb2.Memory(user_id=user.id, content="Likes diagrams.", category="preference")
    await memory_service_pb2_grpc.MemoryServiceStub(channel).StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=memory),
        metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
    )
    assert await asyncio.to_thread(running.tracing.force_flush)

    ours = [s for s in spans if s.trace_id == trace_id]
    names = [s.name for s in ours]
    rpc = next(s for s in ours if s.name == STORE)
    assert rpc.parent_span_id == parent_id  # continues the caller's span
    sql = [s for s in ours if any(key.startswith("db.") for key in s.attributes)]
    assert sql, f"no SQL spans among {names}"
    assert all(s.parent_span_id for s in sql)
    if has_pgvector:
        embedding = next(s for s in ours if s.name == "embedding")
        assert embedding.parent_span_id == rpc.span_id
    print("spans of the trace:", names)
