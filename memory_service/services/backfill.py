"""`memory-service embed`: give every stored memory a vector of the configured model.

Maintenance of every user's rows, so it acts as ALL_USERS (the
faraday_platform pool), in short transactions: a batch is read, embedded
outside any transaction in a worker thread (the model is blocking), and
written. Safe beside a serving service: a memory whose content changed
while its batch was embedded is not written (storage/embeddings.py) and is
found again by the next run. Resumable by nature: what has a vector is
never read again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from memory_service.embedding import Embedder
from memory_service.storage import session
from memory_service.storage.embeddings import EmbeddingStore


@dataclass
class BackfillCount:
    read: int = 0  # memories read without a vector
    written: int = 0  # vectors stored
    wordless: int = 0  # no known word: a zero vector has no direction, so none is stored

    @property
    def changed(self) -> int:
        """Read but not written: changed or deleted meanwhile (or filled by someone else)."""
        return self.read - self.written - self.wordless


async def count_missing(store: EmbeddingStore, model: str, user_id: uuid.UUID | None) -> int:
    with session.acting_as(session.ALL_USERS):
        return await store.count_missing(model, user_id)


async def backfill(
    store: EmbeddingStore,
    model: Embedder,
    *,
    batch_size: int,
    limit: int | None = None,
    user_id: uuid.UUID | None = None,
    on_batch: Callable[[BackfillCount], None] = lambda _: None,
) -> BackfillCount:
    """Embed up to `limit` memories (all: None) missing a vector of `model`."""
    total = BackfillCount()
    after_id = 0
    with session.acting_as(session.ALL_USERS):
        while limit is None or total.read < limit:
            size = batch_size if limit is None else min(batch_size, limit - total.read)
            memories = await store.read_missing(model.name, user_id, after_id, size)
            if not memories:
                break
            after_id = memories[-1].id
            vectors = await asyncio.to_thread(model.embed, [m.content for m in memories])
            keep = [i for i, vector in enumerate(vectors) if vector.any()]
            batch = BackfillCount(read=len(memories), wordless=len(memories) - len(keep))
            written = await store.write(
                model.name, [memories[i] for i in keep], vectors[keep].tolist()
            )
            batch.written = len(written) - await store.drop_changed(model.name, written)
            total.read += batch.read
            total.written += batch.written
            total.wordless += batch.wordless
            on_batch(batch)
    return total


async def drop_other_models(
    store: EmbeddingStore, model: str, user_id: uuid.UUID | None, batch_size: int
) -> int:
    """Delete every vector of a model other than `model`; return how many went."""
    dropped = 0
    with session.acting_as(session.ALL_USERS):
        while (n := await store.drop_other_models(model, user_id, batch_size)) > 0:
            dropped += n
    return dropped
