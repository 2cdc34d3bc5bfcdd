"""The typed asyncio client of the Faraday memory service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, Literal, TypeVar

from faraday.memory.v1 import (
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from google.protobuf import field_mask_pb2

from faraday_memory_client._base import BaseClient
from faraday_memory_client._convert import date_message as _date
from faraday_memory_client._convert import struct_message as _struct
from faraday_memory_client._convert import timestamp_message as _timestamp

T = TypeVar("T")

_TAG_MATCH = {"any": memory_service_pb2.TAG_MATCH_ANY, "all": memory_service_pb2.TAG_MATCH_ALL}


def _filters(
    metadata_filter: Mapping[str, Any] | None,
    times: Mapping[str, datetime | None],
) -> dict[str, Any]:
    """The metadata and time filters ListMemories and RecallMemories share, as request fields."""
    fields: dict[str, Any] = {k: _timestamp(v) for k, v in times.items() if v is not None}
    if metadata_filter is not None:
        fields["metadata_filter"] = _struct(metadata_filter)
    return fields


async def _aiter(items: AsyncIterable[T] | Iterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _items_message(
    items: list[memory_service_pb2.ImportItem],
) -> memory_service_pb2.ImportMemoriesRequest:
    return memory_service_pb2.ImportMemoriesRequest(
        items=memory_service_pb2.ImportItems(items=items)
    )


def _request_id(value: str | None) -> str:
    """The idempotency key of one logical write: `value`, or a fresh UUID4.

    Drawn once per call, before the first attempt, so that every retry of
    the call carries the same key.
    """
    return str(uuid.uuid4()) if value is None else value


class MemoryClient(BaseClient):
    """Asyncio client of MemoryService and LessonService.

    Methods return the generated protobuf messages and raise
    ``grpc.aio.AioRpcError`` on failure (see :func:`field_violations` for the
    details of INVALID_ARGUMENT). Every call has a deadline: `timeout_seconds`
    or the configured default. Only what is safe to repeat is retried, by
    gRPC's retry policy (``service_config.json``: on UNAVAILABLE, and on
    RESOURCE_EXHAUSTED as long as the server asks; "retried on UNAVAILABLE"
    below means both) and within that deadline: the reads (get, list, search),
    and :meth:`store_memory` and :meth:`record_feedback`, which carry a
    request id that makes the server apply a repeated request once.
    :meth:`update_memory`, :meth:`delete_memory` and :meth:`recall` (which
    logs interactions) are never retried.
    """

    @cached_property
    def _memories(self) -> memory_service_pb2_grpc.MemoryServiceAsyncStub:
        return memory_service_pb2_grpc.MemoryServiceStub(self._channel)

    @cached_property
    def _memories_once(self) -> memory_service_pb2_grpc.MemoryServiceAsyncStub:
        """MemoryService over the channel without retries (a write sent without request id)."""
        return memory_service_pb2_grpc.MemoryServiceStub(self._once_channel)

    @cached_property
    def _lessons(self) -> lesson_service_pb2_grpc.LessonServiceAsyncStub:
        return lesson_service_pb2_grpc.LessonServiceStub(self._channel)

    # MemoryService

    async def store_memory(
        self,
        *,
        user_id: str,
        content: str,
        category: str,
        importance: float | None = None,
        tags: Sequence[str] = (),
        context: Mapping[str, Any] | None = None,
        source: str = "",
        confidence: float | None = None,
        assistant_profile_id: int = 0,
        expire_time: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
        embedding: Sequence[float] = (),
        embedding_model: str = "",
        request_id: str | None = None,
        dedup_policy: memory_service_pb2.DedupPolicy.ValueType = (
            memory_service_pb2.DEDUP_POLICY_UNSPECIFIED
        ),
        dedup_min_similarity: float | None = None,
        timeout_seconds: float | None = None,
    ) -> memory_pb2.Memory:
        """Store a new memory (importance defaults to 0.5 on the server).

        `embedding`, with the `embedding_model` it came from, is the
        content's vector when the caller computes embeddings; left empty, a
        server that runs a model embeds the content itself.

        `dedup_policy` (DedupPolicy; unspecified is EXACT) decides whether a
        memory that repeats one already stored for the same user and
        assistant profile is merged into it, which is then returned;
        `dedup_min_similarity` is DEDUP_POLICY_SEMANTIC's threshold (None:
        the server's default). DEDUP_POLICY_NONE always stores a new memory.

        `request_id` is the idempotency key of this store (1..128 printable
        ASCII characters); None, the default, draws a fresh UUID4 for the
        call. Every attempt of the call sends the same key, and the server
        stores at most one memory per key and caller, answering a repeat
        with the memory the first attempt stored. That makes the call safe
        to retry, so it is retried on UNAVAILABLE, where a response may have
        been lost after the memory was stored. Pass the same `request_id`
        yourself to retry across calls (e.g. after a crash); reusing it for
        different content fails with INVALID_ARGUMENT on ``request_id``. An
        empty string sends no key: the call is not retried.

        DEADLINE_EXCEEDED is not retried, although the key would make a
        retry harmless: the deadline is the caller's budget for the whole
        call, all attempts included, and it is already spent.
        """
        memory = memory_pb2.Memory(
            user_id=user_id,
            content=content,
            category=category,
            importance=importance,
            tags=tags,
            context=None if context is None else _struct(context),
            source=source,
            confidence=confidence,
            assistant_profile_id=assistant_profile_id,
            expire_time=None if expire_time is None else _timestamp(expire_time),
            metadata=None if metadata is None else _struct(metadata),
            embedding=embedding,
            embedding_model=embedding_model,
        )
        request_id = _request_id(request_id)
        request = memory_service_pb2.StoreMemoryRequest(
            memory=memory,
            request_id=request_id,
            dedup_policy=dedup_policy,
            dedup_min_similarity=dedup_min_similarity,
        )
        stub = self._memories if request_id else self._memories_once
        return await self._call(stub.StoreMemory, request, timeout_seconds)

    async def batch_store_memories(
        self,
        requests: Sequence[memory_service_pb2.StoreMemoryRequest],
        *,
        timeout_seconds: float | None = None,
    ) -> memory_service_pb2.BatchStoreMemoriesResponse:
        """Store up to 100 memories in one call; one StoreMemoryResult per request, in order.

        Each request is checked and deduplicated as store_memory's; a refused
        one is REJECTED in its result (with its ItemError), not raised. The
        accepted ones commit together. Requests without a request_id get a
        fresh UUID4 (the messages passed in are not changed), so the call
        is retried on UNAVAILABLE: a retry replays what committed
        (ALREADY_DONE) and stores nothing twice.
        """
        keyed = []
        for request in requests:
            if not request.request_id:
                copy = memory_service_pb2.StoreMemoryRequest()
                copy.CopyFrom(request)
                copy.request_id = _request_id(None)
                request = copy
            keyed.append(request)
        batch = memory_service_pb2.BatchStoreMemoriesRequest(requests=keyed)
        return await self._call(self._memories.BatchStoreMemories, batch, timeout_seconds)

    async def get_memory(
        self, id: int, *, timeout_seconds: float | None = None
    ) -> memory_pb2.Memory:
        """Return one memory, expired or not. Retried on UNAVAILABLE."""
        request = memory_service_pb2.GetMemoryRequest(id=id)
        return await self._call(self._memories.GetMemory, request, timeout_seconds)

    async def update_memory(
        self,
        memory: memory_pb2.Memory,
        update_mask: Sequence[str],
        *,
        timeout_seconds: float | None = None,
    ) -> memory_pb2.Memory:
        """Change the fields of `memory.id` named in `update_mask` to their
        values in `memory`; a named field left unset is cleared. With
        `memory.etag` set, fails with ABORTED if the memory changed since it
        was read. Not retried: without an etag a repeat would log a second
        update; with one, a repeat after a lost response fails with ABORTED
        although the first attempt succeeded."""
        request = memory_service_pb2.UpdateMemoryRequest(
            memory=memory, update_mask=field_mask_pb2.FieldMask(paths=update_mask)
        )
        return await self._call(self._memories.UpdateMemory, request, timeout_seconds)

    async def delete_memory(
        self, id: int, etag: str = "", *, timeout_seconds: float | None = None
    ) -> None:
        """Delete a memory and its interactions, only at `etag` if given.

        Not retried: a repeat after a lost response would fail with NOT_FOUND
        (or ABORTED) for a delete that succeeded.
        """
        request = memory_service_pb2.DeleteMemoryRequest(id=id, etag=etag)
        await self._call(self._memories.DeleteMemory, request, timeout_seconds)

    async def list_memories(
        self,
        user_id: str,
        *,
        assistant_profile_id: int = 0,
        categories: Sequence[str] = (),
        tags: Sequence[str] = (),
        metadata_filter: Mapping[str, Any] | None = None,
        update_time_start: datetime | None = None,
        update_time_end: datetime | None = None,
        last_access_time_start: datetime | None = None,
        last_access_time_end: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout_seconds: float | None = None,
    ) -> memory_service_pb2.ListMemoriesResponse:
        """Return one page of a user's unexpired memories, newest first, with
        every tag in `tags`, metadata containing `metadata_filter`, and times
        in [start, end). Retried on UNAVAILABLE."""
        request = memory_service_pb2.ListMemoriesRequest(
            user_id=user_id,
            assistant_profile_id=assistant_profile_id,
            categories=categories,
            tags=tags,
            page_size=page_size,
            page_token=page_token,
            **_filters(
                metadata_filter,
                {
                    "update_time_start": update_time_start,
                    "update_time_end": update_time_end,
                    "last_access_time_start": last_access_time_start,
                    "last_access_time_end": last_access_time_end,
                },
            ),
        )
        return await self._call(self._memories.ListMemories, request, timeout_seconds)

    async def iter_memories(
        self,
        user_id: str,
        *,
        assistant_profile_id: int = 0,
        categories: Sequence[str] = (),
        tags: Sequence[str] = (),
        metadata_filter: Mapping[str, Any] | None = None,
        update_time_start: datetime | None = None,
        update_time_end: datetime | None = None,
        last_access_time_start: datetime | None = None,
        last_access_time_end: datetime | None = None,
        page_size: int = 0,
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[memory_pb2.Memory]:
        """Yield every memory :meth:`list_memories` would list with the same
        filters, page after page; `timeout_seconds` applies to each page."""
        page_token = ""
        while True:
            page = await self.list_memories(
                user_id,
                assistant_profile_id=assistant_profile_id,
                categories=categories,
                tags=tags,
                metadata_filter=metadata_filter,
                update_time_start=update_time_start,
                update_time_end=update_time_end,
                last_access_time_start=last_access_time_start,
                last_access_time_end=last_access_time_end,
                page_size=page_size,
                page_token=page_token,
                timeout_seconds=timeout_seconds,
            )
            for memory in page.memories:
                yield memory
            page_token = page.next_page_token
            if not page_token:
                return

    async def recall(
        self,
        user_id: str,
        query: str = "",
        *,
        limit: int = 10,
        categories: Sequence[str] = (),
        tags: Sequence[str] = (),
        tag_match: Literal["any", "all"] = "any",
        context: Mapping[str, Any] | None = None,
        min_importance: float = 0.0,
        assistant_profile_id: int = 0,
        create_time_start: datetime | None = None,
        create_time_end: datetime | None = None,
        metadata_filter: Mapping[str, Any] | None = None,
        update_time_start: datetime | None = None,
        update_time_end: datetime | None = None,
        last_access_time_start: datetime | None = None,
        last_access_time_end: datetime | None = None,
        skip_access_tracking: bool = False,
        importance_weight: float | None = None,
        recency_weight: float | None = None,
        relevance_weight: float | None = None,
        semantic_weight: float | None = None,
        recency_half_life: timedelta | None = None,
        query_embedding: Sequence[float] = (),
        embedding_model: str = "",
        timeout_seconds: float | None = None,
    ) -> list[memory_service_pb2.ScoredMemory]:
        """Return the user's best memories for `query`, best first.

        `context` and `metadata_filter` keep memories whose context or
        metadata contains them; unset weights take the server's defaults.
        `query_embedding` (with the `embedding_model` it came from) is the
        query's vector when the caller computes embeddings; left empty, the
        server embeds `query` if it runs a model. Asking for vectors the
        server cannot rank by (an embedding, or `semantic_weight` above 0)
        fails with FAILED_PRECONDITION. Not retried: RecallMemories is not
        idempotent, as it bumps each returned memory's last_access_time and
        logs a recall interaction for it (unless `skip_access_tracking`).
        """
        weights = memory_service_pb2.RecallWeights(
            importance=importance_weight,
            recency=recency_weight,
            relevance=relevance_weight,
            semantic=semantic_weight,
        )
        if recency_half_life is not None:
            weights.recency_half_life.FromTimedelta(recency_half_life)
        request = memory_service_pb2.RecallMemoriesRequest(
            user_id=user_id,
            query=query,
            assistant_profile_id=assistant_profile_id,
            categories=categories,
            tags=tags,
            tag_match=_TAG_MATCH[tag_match],
            context=None if context is None else _struct(context),
            min_importance=min_importance,
            create_time_start=None if create_time_start is None else _timestamp(create_time_start),
            create_time_end=None if create_time_end is None else _timestamp(create_time_end),
            limit=limit,
            weights=weights,
            query_embedding=query_embedding,
            embedding_model=embedding_model,
            skip_access_tracking=skip_access_tracking,
            **_filters(
                metadata_filter,
                {
                    "update_time_start": update_time_start,
                    "update_time_end": update_time_end,
                    "last_access_time_start": last_access_time_start,
                    "last_access_time_end": last_access_time_end,
                },
            ),
        )
        response = await self._call(self._memories.RecallMemories, request, timeout_seconds)
        return list(response.memories)

    async def record_feedback(
        self,
        memory_id: int,
        *,
        helpful: bool | None = None,
        rating: int | None = None,
        comment: str = "",
        context: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout_seconds: float | None = None,
    ) -> memory_service_pb2.RecordFeedbackResponse:
        """Record feedback on a memory: exactly one of `helpful` and `rating`
        (1..5), else ValueError. Moves the memory's importance.

        `request_id` is the idempotency key, as in :meth:`store_memory`
        (None: a fresh UUID4 per call): the server applies the feedback once
        per key and answers a repeat with the first interaction and the
        memory as it is now. Retried on UNAVAILABLE, for the same
        reasons; an empty string sends no key and disables the retries.
        """
        if (helpful is None) == (rating is None):
            raise ValueError("pass exactly one of helpful and rating")
        request = memory_service_pb2.RecordFeedbackRequest(
            memory_id=memory_id,
            comment=comment,
            context=None if context is None else _struct(context),
            request_id=_request_id(request_id),
        )
        if helpful is not None:
            request.helpful = helpful
        if rating is not None:
            request.rating = rating
        stub = self._memories if request.request_id else self._memories_once
        return await self._call(stub.RecordFeedback, request, timeout_seconds)

    async def list_interactions(
        self,
        *,
        user_id: str = "",
        memory_id: int = 0,
        interaction_type: memory_pb2.InteractionType.ValueType = (
            memory_pb2.INTERACTION_TYPE_UNSPECIFIED
        ),
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout_seconds: float | None = None,
    ) -> memory_service_pb2.ListInteractionsResponse:
        """Return one page of logged interactions, newest first; needs
        `user_id` or `memory_id`. Retried on UNAVAILABLE."""
        request = memory_service_pb2.ListInteractionsRequest(
            user_id=user_id,
            memory_id=memory_id,
            type=interaction_type,
            start_time=None if start_time is None else _timestamp(start_time),
            end_time=None if end_time is None else _timestamp(end_time),
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self._memories.ListInteractions, request, timeout_seconds)

    async def list_memory_revisions(
        self,
        memory_id: int,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout_seconds: float | None = None,
    ) -> memory_service_pb2.ListMemoryRevisionsResponse:
        """Return one page of a memory's earlier values, newest first, each with
        who changed it and when. Retried on UNAVAILABLE."""
        request = memory_service_pb2.ListMemoryRevisionsRequest(
            memory_id=memory_id, page_size=page_size, page_token=page_token
        )
        return await self._call(self._memories.ListMemoryRevisions, request, timeout_seconds)

    async def import_memories(
        self,
        items: AsyncIterable[memory_service_pb2.ImportItem]
        | Iterable[memory_service_pb2.ImportItem],
        *,
        dedup_policy: memory_service_pb2.DedupPolicy.ValueType = (
            memory_service_pb2.DEDUP_POLICY_UNSPECIFIED
        ),
        dedup_min_similarity: float | None = None,
        chunk_size: int = 1000,
        timeout_seconds: float | None = None,
        on_sent: Callable[[int], None] | None = None,
    ) -> memory_service_pb2.ImportMemoriesResponse:
        """Import `items` in one ImportMemories stream (scope ``memories:import``).

        The options go first, then the items in messages of `chunk_size`
        (1..1000); items are read lazily, so a file of any size streams in
        bounded memory. The server commits each message's items on its own,
        and gRPC's flow control keeps the client at most a few messages
        ahead, so `on_sent(n)`, called after each message with the number of
        items it held, tracks the import's progress.

        Not retried, and no deadline unless `timeout_seconds` is given (an
        import of a million memories takes minutes): if the stream fails,
        what committed stays, and sending the same items again is safe,
        since every item whose import_id was imported before is ALREADY_DONE.
        """
        if not 1 <= chunk_size <= 1000:
            raise ValueError(f"chunk_size must be 1..1000, got {chunk_size}")
        options = memory_service_pb2.ImportOptions(
            dedup_policy=dedup_policy, dedup_min_similarity=dedup_min_similarity
        )

        async def requests() -> AsyncIterator[memory_service_pb2.ImportMemoriesRequest]:
            yield memory_service_pb2.ImportMemoriesRequest(options=options)
            chunk: list[memory_service_pb2.ImportItem] = []
            async for item in _aiter(items):
                chunk.append(item)
                if len(chunk) == chunk_size:
                    yield _items_message(chunk)
                    if on_sent is not None:
                        on_sent(len(chunk))
                    chunk = []
            if chunk:
                yield _items_message(chunk)
                if on_sent is not None:
                    on_sent(len(chunk))

        call = self._memories.ImportMemories(
            requests(), timeout=timeout_seconds, metadata=tuple(await self._metadata())
        )
        return await call

    # LessonService

    async def get_lesson(
        self, id: int, *, timeout_seconds: float | None = None
    ) -> lesson_pb2.Lesson:
        """Return one lesson. Retried on UNAVAILABLE."""
        request = lesson_service_pb2.GetLessonRequest(id=id)
        return await self._call(self._lessons.GetLesson, request, timeout_seconds)

    async def list_lessons(
        self,
        *,
        user_id: str = "",
        status: lesson_pb2.LessonStatus.ValueType = lesson_pb2.LESSON_STATUS_UNSPECIFIED,
        week_of_start: date | None = None,
        week_of_end: date | None = None,
        grade_level: str = "",
        subject_category_id: int = 0,
        subject_category_name: str = "",
        tags: Sequence[str] = (),
        lesson_data: Mapping[str, Any] | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout_seconds: float | None = None,
    ) -> lesson_service_pb2.ListLessonsResponse:
        """Return one page of lessons matching every filter given, newest
        first; `lesson_data` keeps lessons whose data contains it. Retried on
        UNAVAILABLE."""
        request = lesson_service_pb2.ListLessonsRequest(
            user_id=user_id,
            status=status,
            week_of_start=None if week_of_start is None else _date(week_of_start),
            week_of_end=None if week_of_end is None else _date(week_of_end),
            grade_level=grade_level,
            subject_category_id=subject_category_id,
            subject_category_name=subject_category_name,
            tags=tags,
            lesson_data=None if lesson_data is None else _struct(lesson_data),
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self._lessons.ListLessons, request, timeout_seconds)

    async def search_lessons(
        self,
        query: str,
        *,
        user_id: str = "",
        status: lesson_pb2.LessonStatus.ValueType = lesson_pb2.LESSON_STATUS_UNSPECIFIED,
        page_size: int = 0,
        page_token: str = "",
        timeout_seconds: float | None = None,
    ) -> lesson_service_pb2.SearchLessonsResponse:
        """Full-text search of lessons (web-search syntax), best match first.
        Retried on UNAVAILABLE."""
        request = lesson_service_pb2.SearchLessonsRequest(
            query=query,
            user_id=user_id,
            status=status,
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self._lessons.SearchLessons, request, timeout_seconds)
