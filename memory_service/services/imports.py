"""ImportMemories' use case: check each item against the caller, store chunk by chunk.

Items arrive already decoded (rpc/import_messages.py): valid ones as
domain.imports.ImportItem, refused ones as their REJECTED result. Here each
valid item is checked as StoreMemory checks its memory (the caller's user
and profile limits, the caller's own vector), the chunk is stored in one
transaction (storage/imports.py), and the results are tallied in stream
order. A chunk commits before the next message is read: if the stream
breaks, what committed stays, and a re-run finds it ALREADY_DONE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from memory_service.domain.dedup import DEFAULT_MIN_SIMILARITY, Dedup, DedupPolicy
from memory_service.domain.errors import DomainError
from memory_service.domain.imports import (
    ImportItem,
    ImportTally,
    ItemResult,
    Outcome,
    rejected,
)
from memory_service.domain.principal import Principal
from memory_service.services.semantics import Semantics
from memory_service.storage.imports import ImportStore

Chunk = list[ImportItem | ItemResult]


class Importer:
    def __init__(
        self,
        store: ImportStore,
        semantics: Semantics,
        wake_backfill: Callable[[int], None] = lambda _: None,
        default_min_similarity: float = DEFAULT_MIN_SIMILARITY,
    ) -> None:
        """`wake_backfill(first_id)` is called after a chunk committed memories without
        a vector, the first of them `first_id`."""
        self._store = store
        self._semantics = semantics
        self._wake_backfill = wake_backfill
        self._default_min_similarity = default_min_similarity

    async def run(
        self, caller: Principal, dedup: Dedup, chunks: AsyncIterator[Chunk]
    ) -> ImportTally:
        tally = ImportTally()
        if dedup.policy is DedupPolicy.SEMANTIC and dedup.min_similarity is None:
            dedup = replace(dedup, min_similarity=self._default_min_similarity)
        async for chunk in chunks:
            tally.received += len(chunk)
            results: list[ItemResult] = []
            valid: list[ImportItem] = []
            for entry in chunk:
                if isinstance(entry, ItemResult):
                    results.append(entry)
                    continue
                try:
                    valid.append(self._admit(caller, entry))
                except DomainError as error:
                    results.append(rejected(entry.index, entry.import_id, error))
            stored = await self._store.import_chunk(valid, dedup)
            results.extend(stored)
            for result in sorted(results, key=lambda r: r.index):
                tally.add(result)
            unembedded = [
                r.memory_id
                for r, i in zip(stored, valid, strict=True)
                if r.outcome is Outcome.CREATED and i.memory.embedding is None
            ]
            if unembedded and self._semantics.embedder is not None:
                self._wake_backfill(min(unembedded))
        return tally

    def _admit(self, caller: Principal, item: ImportItem) -> ImportItem:
        """The item if the caller may store it as StoreMemory would, its vector checked."""
        memory = item.memory
        caller.user_filter(memory.user_id)
        caller.require_profile(memory.assistant_profile_id, "memory.assistant_profile_id")
        if memory.embedding is not None:
            embedding = self._semantics.check(
                memory.embedding, "memory.embedding", "memory.embedding_model"
            )
            item = replace(item, memory=replace(memory, embedding=embedding))
        return item
