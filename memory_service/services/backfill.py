"""`memory-service embed`: give every stored memory a vector of the configured model.

Maintenance of every user's rows, so it acts as ALL_USERS (the
faraday_platform pool), in short transactions: a batch is read, embedded
outside any transaction in a worker thread (the model is blocking), and
written. Safe beside a serving service: a memory whose content changed
while its batch was embedded is not written (storage/embeddings.py) and is
found again by the next run. Resumable by nature: what has a vector is
never read again.

The server runs the same backfill in the background when it embeds itself
(`run_when_woken`): ImportMemories stores memories without vectors and
wakes it after each chunk, so imported memories become semantically
recallable shortly after the import, without a `memory-service embed`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from memory_service.domain.errors import Unavailable
from memory_service.embedding import BatchingEmbedder, Embedder, EmbeddingError
from memory_service.embedding.embedder import Vectors
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


logger = logging.getLogger(__name__)

# Memories per batch of the server's own backfill: well below the batching
# embedder's queue limit, so recalls and stores can still queue their texts.
SERVER_BATCH_SIZE = 64


async def _embed(model: Embedder | BatchingEmbedder, texts: list[str]) -> Vectors:
    if isinstance(model, BatchingEmbedder):  # the server's: its own worker thread
        return await model.embed(texts)
    return await asyncio.to_thread(model.embed, texts)


async def count_missing(store: EmbeddingStore, model: str, user_id: uuid.UUID | None) -> int:
    with session.acting_as(session.ALL_USERS):
        return await store.count_missing(model, user_id)


async def backfill(
    store: EmbeddingStore,
    model: Embedder | BatchingEmbedder,
    *,
    batch_size: int,
    limit: int | None = None,
    user_id: uuid.UUID | None = None,
    on_batch: Callable[[BackfillCount], None] = lambda _: None,
    after_id: int = 0,
) -> BackfillCount:
    """Embed up to `limit` memories (all: None) missing a vector of `model`, of ids > `after_id`."""
    total = BackfillCount()
    with session.acting_as(session.ALL_USERS):
        while limit is None or total.read < limit:
            size = batch_size if limit is None else min(batch_size, limit - total.read)
            memories = await store.read_missing(model.name, user_id, after_id, size)
            if not memories:
                break
            after_id = memories[-1].id
            vectors = await _embed(model, [m.content for m in memories])
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


class BackfillWake:
    """Wake-ups of the server's backfill, with the lowest memory id they concern.

    A run starts from there rather than from the first memory: the table's
    older memories already have their vectors (or wait for `memory-service
    embed`), and walking a million of them for every imported chunk would
    cost more than the embedding.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._from_id: int | None = None

    def wake(self, from_id: int) -> None:
        """Memories from `from_id` on (and later ones) may lack vectors."""
        self._from_id = from_id if self._from_id is None else min(self._from_id, from_id)
        self._event.set()

    async def next_run(self) -> int:
        """Wait for a wake-up; the id to start after."""
        await self._event.wait()
        self._event.clear()
        from_id, self._from_id = self._from_id or 1, None
        return from_id - 1


async def run_when_woken(
    store: EmbeddingStore, model: BatchingEmbedder, wake: BackfillWake
) -> None:
    """Backfill the memories a wake-up names, each time one comes, until cancelled.

    A wake-up that comes while a run is under way gets a run of its own
    after it. A failed run is logged; the next wake-up tries again.
    """
    while True:
        after_id = await wake.next_run()
        try:
            done = await backfill(store, model, batch_size=SERVER_BATCH_SIZE, after_id=after_id)
            if done.written:
                logger.info("embedded %d imported memories", done.written)
        except Unavailable:
            logger.warning("import backfill skipped: database unavailable")
        except EmbeddingError as exc:
            logger.warning("import backfill stopped: %s", exc)
        except Exception:
            logger.exception("import backfill failed")
