"""Typed asyncio client of the Faraday memory service.

    async with MemoryClient("localhost:50051") as client:
        memory = await client.store_memory(user_id=..., content=..., category="fact")

Calls return the generated messages of ``faraday.memory.v1`` (re-exported
here) and raise ``grpc.aio.AioRpcError`` (re-exported as ``AioRpcError``).
"""

from faraday.memory.v1.lesson_pb2 import Lesson, LessonStatus
from faraday.memory.v1.lesson_service_pb2 import (
    LessonMatch,
    ListLessonsResponse,
    SearchLessonsResponse,
)
from faraday.memory.v1.memory_pb2 import Interaction, InteractionType, Memory, MemoryRevision
from faraday.memory.v1.memory_service_pb2 import (
    ListInteractionsResponse,
    ListMemoriesResponse,
    ListMemoryRevisionsResponse,
    RecordFeedbackResponse,
    ScoredMemory,
)
from grpc import StatusCode
from grpc.aio import AioRpcError

from faraday_memory_client._base import MetadataProvider
from faraday_memory_client._client import MemoryClient
from faraday_memory_client._errors import FieldViolation, field_violations
from faraday_memory_client._retry import ClientConfig

__all__ = [
    "AioRpcError",
    "ClientConfig",
    "FieldViolation",
    "Interaction",
    "InteractionType",
    "Lesson",
    "LessonMatch",
    "LessonStatus",
    "ListInteractionsResponse",
    "ListLessonsResponse",
    "ListMemoriesResponse",
    "ListMemoryRevisionsResponse",
    "Memory",
    "MemoryClient",
    "MemoryRevision",
    "MetadataProvider",
    "RecordFeedbackResponse",
    "ScoredMemory",
    "SearchLessonsResponse",
    "StatusCode",
    "field_violations",
]
