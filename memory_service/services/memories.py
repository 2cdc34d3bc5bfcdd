"""Use cases on memories: store, read, change, recall, feedback.

Every use case takes the caller (domain.principal.Principal) and binds what
it touches to the caller's visibility: a user-scoped caller reaches only its
own user's memories, a profile-limited service token only its profiles'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from memory_service.domain import dedup as dedup_rule
from memory_service.domain import feedback as feedback_rule
from memory_service.domain import page_token
from memory_service.domain.dedup import DEFAULT_DEDUP, Dedup, DedupPolicy, Stored, StoreRequest
from memory_service.domain.errors import (
    Contention,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
)
from memory_service.domain.models import (
    Embedding,
    Feedback,
    Interaction,
    InteractionFilter,
    Memory,
    MemoryFilter,
    MemoryPatch,
    MemoryRevision,
    NewMemory,
    Page,
    Recalled,
    RecallQuery,
    Signal,
)
from memory_service.domain.principal import Principal
from memory_service.services.semantics import Semantics
from memory_service.storage import session
from memory_service.storage.memories import MemoryStore, RequestKey, StoreItem
from memory_service.telemetry import metrics


@dataclass(frozen=True)
class MemoryPolicy:
    """Server-side knobs of the memory use cases (from Settings)."""

    log_recall_interactions: bool = True
    feedback_learning_rate: float = feedback_rule.DEFAULT_LEARNING_RATE
    # DEDUP_POLICY_SEMANTIC's threshold when a request sets none.
    dedup_min_similarity: float = dedup_rule.DEFAULT_MIN_SIMILARITY

    def __post_init__(self) -> None:
        if not dedup_rule.valid_min_similarity(self.dedup_min_similarity):
            raise ValueError(
                f"FARADAY_DEDUP_MIN_SIMILARITY={self.dedup_min_similarity}: must be"
                f" {dedup_rule.MIN_SIMILARITY_LOWEST}..{dedup_rule.MIN_SIMILARITY_HIGHEST}"
            )


def _require_future(field: str, value: datetime | None) -> None:
    if value is not None and value <= datetime.now(UTC):
        raise InvalidArgument.one(field, "must be in the future")


def _key(caller: Principal, request_id: str, request_hash: str) -> RequestKey | None:
    return RequestKey(caller.key, request_id, request_hash) if request_id else None


class Memories:
    def __init__(
        self, store: MemoryStore, policy: MemoryPolicy, semantics: Semantics | None = None
    ) -> None:
        self._store = store
        self._policy = policy
        self.semantics = semantics or Semantics(None, 0, None, stored=False)

    async def store(
        self,
        caller: Principal,
        memory: NewMemory,
        request_id: str = "",
        request_hash: str = "",
        dedup: Dedup = DEFAULT_DEDUP,
    ) -> Stored:
        """StoreMemory: a new memory, or the one it repeats under `dedup`, merged."""
        memory, dedup = await self._prepared(caller, memory, dedup)
        return await self._store.store(memory, _key(caller, request_id, request_hash), dedup)

    async def store_batch(
        self, caller: Principal, requests: Sequence[StoreRequest | DomainError]
    ) -> list[Stored | DomainError]:
        """BatchStoreMemories: each request checked as StoreMemory checks it, the
        accepted ones stored in one transaction; a refused one is its error.

        Entries that are already errors (the request did not decode into a
        valid memory) stay as they are. Server-side embeddings are requested
        together, so the model embeds the batch in as few calls as it can.
        """
        prepared = await asyncio.gather(*(self._prepared_item(caller, r) for r in requests))
        items = [p for p in prepared if isinstance(p, StoreItem)]
        stored = iter(await self._store.store_batch(items) if items else [])
        return [next(stored) if isinstance(p, StoreItem) else p for p in prepared]

    async def _prepared_item(
        self, caller: Principal, request: StoreRequest | DomainError
    ) -> StoreItem | DomainError:
        if isinstance(request, DomainError):
            return request
        try:
            memory, dedup = await self._prepared(caller, request.memory, request.dedup)
        except DomainError as exc:
            return exc
        return StoreItem(memory, _key(caller, request.request_id, request.request_hash), dedup)

    async def _prepared(
        self, caller: Principal, memory: NewMemory, dedup: Dedup
    ) -> tuple[NewMemory, Dedup]:
        """The memory as it will be stored (with its embedding), and the complete policy;
        or the error StoreMemory answers before it touches the database."""
        caller.user_filter(memory.user_id)
        caller.require_profile(memory.assistant_profile_id, "memory.assistant_profile_id")
        _require_future("memory.expire_time", memory.expires_at)
        if dedup.policy is DedupPolicy.SEMANTIC:
            if not self.semantics.enabled or (
                memory.embedding is None and self.semantics.embedder is None
            ):
                raise FailedPrecondition(
                    "dedup_policy: DEDUP_POLICY_SEMANTIC needs an embedding of the memory:"
                    " send memory.embedding, or use a server that embeds memories"
                    f" ({self.semantics.describe()})",
                    reason="VECTORS_UNAVAILABLE",
                )
            if dedup.min_similarity is None:
                dedup = replace(dedup, min_similarity=self._policy.dedup_min_similarity)
        memory = replace(memory, embedding=await self._embedding(memory.embedding, memory.content))
        return memory, dedup

    async def _embedding(self, given: Embedding | None, content: str) -> Embedding | None:
        """The caller's vector, checked, else the server's embedding of `content` (or None)."""
        if given is not None:
            return self.semantics.check(given, "memory.embedding", "memory.embedding_model")
        return await self.semantics.embed(content)

    async def get(self, caller: Principal, memory_id: int) -> Memory:
        return await self._store.get(memory_id, caller.visibility)

    async def update(self, caller: Principal, patch: MemoryPatch, paths: list[str]) -> Memory:
        if "assistant_profile_id" in patch.values:
            caller.require_profile(
                patch.values["assistant_profile_id"], "memory.assistant_profile_id"
            )
        _require_future("memory.expire_time", patch.values.get("expires_at"))
        if "content" in patch.values:
            patch = replace(
                patch, embedding=await self._embedding(patch.embedding, patch.values["content"])
            )
        return await self._store.update(patch, paths, caller.visibility)

    async def delete(self, caller: Principal, memory_id: int, expected_version: int | None) -> None:
        await self._store.delete(memory_id, expected_version, caller.visibility)

    async def list_memories(
        self, caller: Principal, f: MemoryFilter, token: str, size: int
    ) -> tuple[list[Memory], str]:
        caller.user_filter(f.user_id)
        if f.assistant_profile_id is not None:
            caller.require_profile(f.assistant_profile_id, "assistant_profile_id")
        filters = asdict(f)
        after = page_token.decode_time_and_id(token, filters)
        page = await self._store.list_memories(
            f, after, page_token.page_size(size), caller.visibility
        )
        return page.items, _next_token(page, filters)

    async def recall(self, caller: Principal, query: RecallQuery) -> Recalled:
        caller.user_filter(query.user_id)
        if query.assistant_profile_id is not None:
            caller.require_profile(query.assistant_profile_id, "assistant_profile_id")
        query = await self._with_query_embedding(query)
        signals = _signals(query)
        if not signals:
            raise InvalidArgument.one(
                "weights", "every signal this recall can use (see RecallSignal) is weighted 0"
            )
        # skip_access_tracking needs no scope of its own: it only leaves out
        # the bookkeeping of a read the caller may make anyway.
        log = self._policy.log_recall_interactions and not query.skip_access_tracking
        try:
            memories = await self._store.recall(query, caller.visibility, log=log)
        except Contention:
            # Concurrent recalls of one user can still deadlock, rarely, on
            # the foreign-key checks of their interaction rows against each
            # other's last_accessed bumps. The statement is atomic and was
            # rolled back whole, so running it again is safe.
            memories = await self._store.recall(query, caller.visibility, log=log)
        metrics.recall_scored(len(memories))
        return Recalled(memories, signals)

    async def _with_query_embedding(self, query: RecallQuery) -> RecallQuery:
        """The query with the embedding semantic ranking will use, if any."""
        embedding = query.query_embedding
        if embedding is not None:
            embedding = self.semantics.check(embedding, "query_embedding", "embedding_model")
        elif query.weights.semantic > 0:
            embedding = await self.semantics.embed(query.query)
            if embedding is None and query.semantic_required:
                raise FailedPrecondition(
                    "weights.semantic: no query embedding to rank with: send query_embedding,"
                    f" or a query this server can embed ({self.semantics.describe()})",
                    reason="VECTORS_UNAVAILABLE",
                )
        return replace(query, query_embedding=embedding)

    async def record_feedback(
        self, caller: Principal, feedback: Feedback, request_id: str = "", request_hash: str = ""
    ) -> tuple[Memory, Interaction]:
        target = feedback_rule.target_importance(feedback.helpful, feedback.rating)
        return await self._store.record_feedback(
            feedback,
            target,
            self._policy.feedback_learning_rate,
            caller.visibility,
            _key(caller, request_id, request_hash),
        )

    async def list_interactions(
        self, caller: Principal, f: InteractionFilter, token: str, size: int
    ) -> tuple[list[Interaction], str]:
        if f.user_id is None and f.memory_id is None and caller.user_id is None:
            raise InvalidArgument.one("user_id", "user_id or memory_id is required")
        caller.user_filter(f.user_id)
        filters = asdict(f)
        after = page_token.decode_time_and_id(token, filters)
        page = await self._store.list_interactions(
            f, after, page_token.page_size(size), caller.visibility
        )
        return page.items, _next_token(page, filters)

    async def list_revisions(
        self, caller: Principal, memory_id: int, token: str, size: int
    ) -> tuple[list[MemoryRevision], str]:
        """A memory's earlier values, newest first, visible exactly when the memory is."""
        filters = {"memory_id": memory_id}
        before = page_token.decode_id(token, filters)
        page = await self._store.list_revisions(
            memory_id, before, page_token.page_size(size), caller.visibility
        )
        next_token = ""
        if page.next_position is not None:
            next_token = page_token.encode_id(page.next_position[0], filters)
        return page.items, next_token

    async def sweep_expired(self, batch_size: int) -> int:
        """Delete every expired memory and request key, batch by batch; return memories gone.

        Maintenance of every user's rows: runs as ALL_USERS under row-level
        security, which only the faraday_platform role's connections honour.
        """
        total = 0
        with session.acting_as(session.ALL_USERS):
            while (deleted := await self._store.sweep_expired(batch_size)) > 0:
                total += deleted
                if deleted < batch_size:
                    break
            while await self._store.sweep_request_keys(batch_size) == batch_size:
                pass
        return total


def _next_token(page: Page[Any], filters: Any) -> str:
    if page.next_position is None:
        return ""
    moment, ident = page.next_position
    return page_token.encode_time_and_id(moment, ident, filters)


def _signals(query: RecallQuery) -> tuple[Signal, ...]:
    """The signals this recall ranks by: weighted above 0, and available."""
    w = query.weights
    used = (
        (Signal.IMPORTANCE, w.importance > 0),
        (Signal.RECENCY, w.recency > 0),
        (Signal.LEXICAL, w.relevance > 0 and bool(query.query)),
        (Signal.SEMANTIC, w.semantic > 0 and query.query_embedding is not None),
    )
    return tuple(signal for signal, on in used if on)
