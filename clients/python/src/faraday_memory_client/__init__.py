"""Typed asyncio clients of the Faraday memory service.

    async with MemoryClient("localhost:50051") as client:
        memory = await client.store_memory(user_id=..., content=..., category="fact")

    async with AdminClient("localhost:50051", metadata_provider=admin_token) as admin:
        user = await admin.upsert_user(email="ada@school.example.org", name="Ada")

Calls return the generated messages of ``faraday.memory.v1`` (re-exported
here) and raise ``grpc.aio.AioRpcError`` (re-exported as ``AioRpcError``).
"""

from faraday.memory.v1.admin_service_pb2 import DeleteUserDataResponse, ExportUserDataResponse
from faraday.memory.v1.lesson_pb2 import Lesson, LessonStatus
from faraday.memory.v1.lesson_service_pb2 import (
    LessonMatch,
    ListLessonsResponse,
    SearchLessonsResponse,
)
from faraday.memory.v1.memory_pb2 import Interaction, InteractionType, Memory, MemoryRevision
from faraday.memory.v1.memory_service_pb2 import (
    DedupPolicy,
    ImportItem,
    ImportMemoriesResponse,
    ListInteractionsResponse,
    ListMemoriesResponse,
    ListMemoryRevisionsResponse,
    RecordFeedbackResponse,
    ScoredMemory,
)
from faraday.memory.v1.registry_pb2 import (
    AssistantCapability,
    AssistantProfile,
    SubjectCategory,
    User,
    UserPreferences,
)
from grpc import StatusCode
from grpc.aio import AioRpcError

from faraday_memory_client._admin import AdminClient, capability
from faraday_memory_client._base import MetadataProvider
from faraday_memory_client._client import MemoryClient
from faraday_memory_client._errors import FieldViolation, field_violations
from faraday_memory_client._service_config import ClientConfig

__all__ = [
    "AdminClient",
    "AioRpcError",
    "AssistantCapability",
    "AssistantProfile",
    "ClientConfig",
    "DedupPolicy",
    "DeleteUserDataResponse",
    "ExportUserDataResponse",
    "FieldViolation",
    "ImportItem",
    "ImportMemoriesResponse",
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
    "SubjectCategory",
    "User",
    "UserPreferences",
    "capability",
    "field_violations",
]
