"""Use cases on memories: store, read, change, recall, feedback."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from memory_service.domain import feedback as feedback_rule
from memory_service.domain import page_token
from memory_service.domain.errors import InvalidArgument
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
from memory_service.storage.memories import MemoryStore


@dataclass(frozen=True)
class MemoryPolicy:
    """Server-side knobs of the memory use cases (from Settings)."""

    log_recall_interactions: bool = True
    feedback_learning_rate: float = feedback_rule.DEFAULT_LEARNING_RATE


def _require_future(field: str, value: datetime | None) -> None:
    if value is not None and value <= datetime.now(UTC):
        raise InvalidArgument.one(field, "must be in the future")


class Memories:
    def __init__(self, store: MemoryStore, policy: MemoryPolicy) -> None:
        self._store = store
        self._policy = policy

    async def store(self, memory: NewMemory) -> Memory:
        _require_future("memory.expire_time", memory.expires_at)
        return await self._store.store(memory)

    async def get(self, memory_id: int) -> Memory:
        return await self._store.get(memory_id)

    async def update(self, patch: MemoryPatch, paths: list[str]) -> Memory:
        _require_future("memory.expire_time", patch.values.get("expires_at"))
        return await self._store.update(patch, paths)

    async def delete(self, memory_id: int, expected_version: int | None) -> None:
        await self._store.delete(memory_id, expected_version)

    async def list_memories(
        self, f: MemoryFilter, token: str, size: int
    ) -> tuple[list[Memory], str]:
        filters = _fingerprint_of(f)
        after = page_token.decode_time_and_id(token, filters)
        page = await self._store.list_memories(f, after, page_token.page_size(size))
        return page.items, _next_token(page, filters)

    async def recall(self, query: RecallQuery) -> list[ScoredMemory]:
        return await self._store.recall(query, log=self._policy.log_recall_interactions)

    async def record_feedback(self, feedback: Feedback) -> tuple[Memory, Interaction]:
        target = feedback_rule.target_importance(feedback.helpful, feedback.rating)
        return await self._store.record_feedback(
            feedback, target, self._policy.feedback_learning_rate
        )

    async def list_interactions(
        self, f: InteractionFilter, token: str, size: int
    ) -> tuple[list[Interaction], str]:
        if f.user_id is None and f.memory_id is None:
            raise InvalidArgument.one("user_id", "user_id or memory_id is required")
        filters = _fingerprint_of(f)
        after = page_token.decode_time_and_id(token, filters)
        page = await self._store.list_interactions(f, after, page_token.page_size(size))
        return page.items, _next_token(page, filters)

    async def sweep_expired(self, batch_size: int) -> int:
        """Delete every expired memory, batch by batch; return how many went."""
        total = 0
        while True:
            deleted = await self._store.sweep_expired(batch_size)
            total += deleted
            if deleted < batch_size:
                return total


def _fingerprint_of(f: Any) -> Any:
    return asdict(f)


def _next_token(page: Page[Any], filters: Any) -> str:
    if page.next_position is None:
        return ""
    moment, ident = page.next_position
    return page_token.encode_time_and_id(moment, ident, filters)
