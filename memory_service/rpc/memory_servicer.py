"""MemoryService: protobuf in -> one use case -> protobuf out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from google.protobuf import empty_pb2

from memory_service.domain import audit
from memory_service.domain.dedup import StoreRequest
from memory_service.domain.errors import DomainError, InvalidArgument
from memory_service.domain.models import Weights
from memory_service.domain.validation import BATCH_STORE_MAX_REQUESTS
from memory_service.rpc import caller, import_messages
from memory_service.rpc import memory_messages as messages
from memory_service.rpc.errors import translate_errors
from memory_service.services.imports import Chunk, Importer
from memory_service.services.memories import Memories

Context = grpc.aio.ServicerContext[Any, Any]

# StoreMemory's initial metadata: created, deduplicated or replayed.
STORE_OUTCOME_HEADER = "faraday-store-outcome"


def _check_batch(request: memory_service_pb2.BatchStoreMemoriesRequest) -> None:
    """What fails a BatchStoreMemories call as a whole: the count, a repeated request_id."""
    count = len(request.requests)
    if not 1 <= count <= BATCH_STORE_MAX_REQUESTS:
        raise InvalidArgument.one(
            "requests", f"must hold 1..{BATCH_STORE_MAX_REQUESTS} requests, got {count}"
        )
    first: dict[str, int] = {}
    for index, item in enumerate(request.requests):
        if not item.request_id:
            continue
        if item.request_id in first:
            raise InvalidArgument.one(
                "requests",
                f"requests[{index}].request_id repeats requests[{first[item.request_id]}]'s;"
                " request_ids must differ within a call",
            )
        first[item.request_id] = index


@translate_errors
class MemoryServicer(memory_service_pb2_grpc.MemoryServiceServicer):
    def __init__(self, memories: Memories, default_weights: Weights, importer: Importer) -> None:
        self._memories = memories
        self._default_weights = default_weights
        self._importer = importer

    async def StoreMemory(
        self, request: memory_service_pb2.StoreMemoryRequest, context: Context
    ) -> memory_pb2.Memory:
        r = messages.store_request(request)
        stored = await self._memories.store(
            caller.current.get(), r.memory, r.request_id, r.request_hash, r.dedup
        )
        # Before the response, so it travels even where a client reads only
        # the headers of a unary call.
        await context.send_initial_metadata(((STORE_OUTCOME_HEADER, stored.outcome.value),))
        return messages.memory_message(stored.memory)

    async def BatchStoreMemories(
        self, request: memory_service_pb2.BatchStoreMemoriesRequest, context: Context
    ) -> memory_service_pb2.BatchStoreMemoriesResponse:
        _check_batch(request)
        items: list[StoreRequest | DomainError] = []
        for item in request.requests:
            try:
                items.append(messages.store_request(item))
            except DomainError as exc:
                items.append(exc)
        results = await self._memories.store_batch(caller.current.get(), items)
        return memory_service_pb2.BatchStoreMemoriesResponse(
            results=[messages.store_result(r) for r in results]
        )

    async def ImportMemories(
        self,
        request_iterator: AsyncIterator[memory_service_pb2.ImportMemoriesRequest],
        context: Context,
    ) -> memory_service_pb2.ImportMemoriesResponse:
        requests = aiter(request_iterator)
        options = import_messages.import_options(await anext(requests, None))

        async def chunks() -> AsyncIterator[Chunk]:
            index = 0
            async for request in requests:
                items = import_messages.items_of(request)
                now = datetime.now(UTC)
                yield [
                    import_messages.import_item(item, index + i, now)
                    for i, item in enumerate(items)
                ]
                index += len(items)

        tally = await self._importer.run(caller.current.get(), options, chunks())
        return import_messages.import_response(tally)

    async def GetMemory(
        self, request: memory_service_pb2.GetMemoryRequest, context: Context
    ) -> memory_pb2.Memory:
        memory = await self._memories.get(caller.current.get(), messages.memory_id(request.id))
        return messages.memory_message(memory)

    async def UpdateMemory(
        self, request: memory_service_pb2.UpdateMemoryRequest, context: Context
    ) -> memory_pb2.Memory:
        patch, paths = messages.memory_patch(request)
        audit.note(memory_id=patch.memory_id)
        return messages.memory_message(
            await self._memories.update(caller.current.get(), patch, paths)
        )

    async def DeleteMemory(
        self, request: memory_service_pb2.DeleteMemoryRequest, context: Context
    ) -> empty_pb2.Empty:
        memory_id = messages.memory_id(request.id)
        audit.note(memory_id=memory_id)
        await self._memories.delete(
            caller.current.get(), memory_id, messages.version_from_etag("etag", request.etag)
        )
        return empty_pb2.Empty()

    async def ListMemories(
        self, request: memory_service_pb2.ListMemoriesRequest, context: Context
    ) -> memory_service_pb2.ListMemoriesResponse:
        items, token = await self._memories.list_memories(
            caller.current.get(),
            messages.memory_filter(request),
            request.page_token,
            request.page_size,
        )
        return memory_service_pb2.ListMemoriesResponse(
            memories=[messages.memory_message(m) for m in items], next_page_token=token
        )

    async def RecallMemories(
        self, request: memory_service_pb2.RecallMemoriesRequest, context: Context
    ) -> memory_service_pb2.RecallMemoriesResponse:
        query = messages.recall_query(request, self._default_weights)
        recalled = await self._memories.recall(caller.current.get(), query)
        return memory_service_pb2.RecallMemoriesResponse(
            memories=[messages.scored_message(s) for s in recalled.memories],
            signals=[messages.SIGNALS[s] for s in recalled.signals],
        )

    async def RecordFeedback(
        self, request: memory_service_pb2.RecordFeedbackRequest, context: Context
    ) -> memory_service_pb2.RecordFeedbackResponse:
        feedback = messages.feedback(request)
        request_id, request_hash = messages.request_identity(request)
        memory, interaction = await self._memories.record_feedback(
            caller.current.get(), feedback, request_id, request_hash
        )
        return memory_service_pb2.RecordFeedbackResponse(
            memory=messages.memory_message(memory),
            interaction=messages.interaction_message(interaction),
        )

    async def ListInteractions(
        self, request: memory_service_pb2.ListInteractionsRequest, context: Context
    ) -> memory_service_pb2.ListInteractionsResponse:
        items, token = await self._memories.list_interactions(
            caller.current.get(),
            messages.interaction_filter(request),
            request.page_token,
            request.page_size,
        )
        return memory_service_pb2.ListInteractionsResponse(
            interactions=[messages.interaction_message(i) for i in items], next_page_token=token
        )

    async def ListMemoryRevisions(
        self, request: memory_service_pb2.ListMemoryRevisionsRequest, context: Context
    ) -> memory_service_pb2.ListMemoryRevisionsResponse:
        items, token = await self._memories.list_revisions(
            caller.current.get(),
            messages.memory_id(request.memory_id, "memory_id"),
            request.page_token,
            request.page_size,
        )
        return memory_service_pb2.ListMemoryRevisionsResponse(
            revisions=[messages.revision_message(r) for r in items], next_page_token=token
        )
