"""ImportMemories' use case: check each item against the caller, store chunk by chunk.

Items arrive already decoded (rpc/import_messages.py): valid ones as
domain.imports.ImportItem, refused ones as their REJECTED result. Here each
valid item is checked as StoreMemory checks its memory (the caller's user
and profile limits, the caller's own vector), the chunk is stored in one
transaction (storage/imports.py), and the results are tallied in stream
order. Each chunk commits on its own (two may be in flight, see
Importer.run): if the stream breaks, what committed stays, and a re-run
finds it ALREADY_DONE.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

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

# Chunks of one stream whose transactions may run at once (see Importer.run).
CHUNKS_IN_FLIGHT = 2


@dataclass
class _InFlight:
    task: asyncio.Task[list[ItemResult]]
    results: list[ItemResult]  # the chunk's items refused before storage
    valid: list[ImportItem]
    stored: list[ItemResult] = field(default_factory=list)


async def _done(chunk: _InFlight) -> _InFlight:
    chunk.stored = await chunk.task
    return chunk


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
        """Import every chunk, up to CHUNKS_IN_FLIGHT at once, and tally them in stream order.

        While one chunk's transaction runs, the next message is read and
        decoded and its transaction may start: on two connections, chunks of
        different users and profiles are written in parallel. Stream order
        still holds where it matters: a chunk takes its dedup locks only once
        the chunk before it holds its own (storage/imports.py), so for a
        (user, profile) the two share it waits for the earlier one's commit
        and sees its memories and import ids, as if they ran one after the
        other. The first chunk runs alone: it commits the stream's audit row.
        """
        tally = ImportTally()
        if dedup.policy is DedupPolicy.SEMANTIC and dedup.min_similarity is None:
            dedup = replace(dedup, min_similarity=self._default_min_similarity)
        pending: deque[_InFlight] = deque()
        before: asyncio.Event | None = None
        first = True
        try:
            async for chunk in chunks:
                tally.received += len(chunk)
                results, valid = self._admit_all(caller, chunk)
                locked = asyncio.Event()
                task = asyncio.create_task(
                    self._store.import_chunk(valid, dedup, after=before, locked=locked)
                )
                before = locked
                pending.append(_InFlight(task, results, valid))
                while pending and (first or len(pending) >= CHUNKS_IN_FLIGHT):
                    self._finish(await _done(pending.popleft()), tally)
                    first = False
            while pending:
                self._finish(await _done(pending.popleft()), tally)
        finally:
            # A failed chunk (or a cancelled stream) fails the stream: the
            # chunks after it are cancelled, their transactions rolled back.
            for left in pending:
                left.task.cancel()
            await asyncio.gather(*(left.task for left in pending), return_exceptions=True)
        return tally

    def _admit_all(
        self, caller: Principal, chunk: Chunk
    ) -> tuple[list[ItemResult], list[ImportItem]]:
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
        return results, valid

    def _finish(self, done: _InFlight, tally: ImportTally) -> None:
        stored = done.stored
        for result in sorted([*done.results, *stored], key=lambda r: r.index):
            tally.add(result)
        unembedded = [
            r.memory_id
            for r, i in zip(stored, done.valid, strict=True)
            if r.outcome is Outcome.CREATED and i.memory.embedding is None
        ]
        if unembedded and self._semantics.embedder is not None:
            self._wake_backfill(min(unembedded))

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
