"""Use cases on memories: store, read, change, recall, feedback.

Every use case takes the caller (domain.principal.Principal) and binds what
it touches to the caller's visibility: a user-scoped caller reaches only its
own user's memories, a profile-limited service token only its profiles'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from memory_service.domain import feedback as feedback_rule
from memory_service.domain import page_token
from memory_service.domain.errors import Contention, InvalidArgument
from memory_service.domain.models import (
    Feedback,
    Interaction,
    InteractionFilter,
    Memory,
    MemoryFilter,
    MemoryPatch,
    NewMemory,
    Page,
    RecallQuery,
    ScoredMemory,
)
from memory_service.domain.principal import Principal
from memory_service.storage import session
from memory_service.storage.memories import MemoryStore, RequestKey


@dataclass(frozen=True)
class MemoryPolicy:
    """Server-side knobs of the memory use cases (from Settings)."""

    log_recall_interactions: bool = True
    feedback_learning_rate: float = feedback_rule.DEFAULT_LEARNING_RATE


def _require_future(field: str, value: datetime | None) -> None:
    if value is not None and value <= datetime.now(UTC):
        raise InvalidArgument.one(field, "must be in the future")


def _key(caller: Principal, request_id: str, request_hash: str) -> RequestKey | None:
    return RequestKey(caller.key, request_id, request_hash) if request_id else None


class Memories:
    def __init__(self, store: MemoryStore, policy: MemoryPolicy) -> None:
        self._store = store
        self._policy = policy

    async def store(
        self, caller: Principal, memory: NewMemory, request_id: str = "", request_hash: str = ""
    ) -> Memory:
        caller.user_filter(memory.user_id)
        caller.require_profile(memory.assistant_profile_id, "memory.assistant_profile_id")
        _require_future("memory.expire_time", memory.expires_at)
        return await self._store.store(memory, _key(caller, request_id, request_hash))

    async def get(self, caller: Principal, memory_id: int) -> Memory:
        return await self._store.get(memory_id, caller.visibility)

    async def update(self, caller: Principal, patch: MemoryPatch, paths: list[str]) -> Memory:
        if "assistant_profile_id" in patch.values:
            caller.require_profile(
                patch.values["assistant_profile_id"], "memory.assistant_profile_id"
            )
        _require_future("memory.expire_time", patch.values.get("expires_at"))
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

    async def recall(self, caller: Principal, query: RecallQuery) -> list[ScoredMemory]:
        caller.user_filter(query.user_id)
        if query.assistant_profile_id is not None:
            caller.require_profile(query.assistant_profile_id, "assistant_profile_id")
        log = self._policy.log_recall_interactions
        try:
            return await self._store.recall(query, caller.visibility, log=log)
        except Contention:
            # Concurrent recalls of one user can still deadlock, rarely, on
            # the foreign-key checks of their interaction rows against each
            # other's last_accessed bumps. The statement is atomic and was
            # rolled back whole, so running it again is safe.
            return await self._store.recall(query, caller.visibility, log=log)

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
