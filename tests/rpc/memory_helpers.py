"""Builders for memory requests used by the memory and recall tests."""

from __future__ import annotations

from typing import Any

from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc


async def store(
    stub: memory_service_pb2_grpc.MemoryServiceStub,
    user_id: str,
    content: str = "Prefers bullet points.",
    *,
    category: str = "preference",
    importance: float | None = None,
    tags: list[str] | None = None,
    context: dict[str, Any] | None = None,
    request_id: str = "",
    **fields: Any,
) -> memory_pb2.Memory:
    memory = memory_pb2.Memory(
        user_id=user_id, content=content, category=category, tags=tags or [], **fields
    )
    if importance is not None:
        memory.importance = importance
    if context:
        memory.context.update(context)
    return await stub.StoreMemory(
        memory_service_pb2.StoreMemoryRequest(memory=memory, request_id=request_id)
    )
