"""The embedding backfill's statements on memory_embeddings (migration 0011).

The backfill (services/backfill.py) reads memories without a vector of a
model in short keyset batches, embeds them outside any transaction, and
writes each vector only if its memory still has the version that was read:
UpdateMemory bumps the version and deletes the memory's vectors when the
content changes, so a vector of the old content must not land after it.
`write` and then `drop_changed` hold that against an update in either order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from memory_service.storage.database import Database
from memory_service.storage.named_sql import NamedSQL


def vector_text(vector: Sequence[float]) -> str:
    """pgvector's text form (`[0.1,0.2]`); asyncpg has no codec for the type."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


# Not expired, and no vector of :model yet. Rows still in the table past
# their expiry wait for the sweeper; embedding them would be wasted work.
_MISSING = """(expires_at IS NULL OR expires_at > now())
  AND (:user_id::uuid IS NULL OR user_id = :user_id)
  AND NOT EXISTS (SELECT 1 FROM memory_embeddings e
                  WHERE e.user_id = m.user_id AND e.memory_id = m.id AND e.model = :model)"""

_COUNT_MISSING = NamedSQL.compile(f"SELECT count(*) FROM user_memories m WHERE {_MISSING}")

# Keyset on id (the unique (id, user_id) index): each batch is a range scan, and no
# cursor or transaction is held between batches.
_READ_MISSING = NamedSQL.compile(f"""
SELECT id, user_id, content, version FROM user_memories m
WHERE id > :after_id AND {_MISSING}
ORDER BY id
LIMIT :limit
""")

# FOR SHARE: an UpdateMemory that has changed the row but not yet committed
# (and has already deleted the vectors it could see) makes this wait, and
# the version check then runs on its committed row and skips it.
# The other order is _DROP_CHANGED's: an UpdateMemory whose statement began
# while this one held the row waits, then deletes vectors from a snapshot
# taken before this commit, and so misses the vector written here.
_WRITE = NamedSQL.compile("""
INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)
SELECT m.user_id, m.id, :model, b.embedding::vector
FROM unnest(:ids::bigint[], :versions::int[], :embeddings::text[]) AS b(id, version, embedding)
JOIN user_memories m ON m.id = b.id AND m.version = b.version
FOR SHARE OF m
ON CONFLICT DO NOTHING
RETURNING memory_id
""")

# Run after _WRITE has committed: delete the vectors it wrote for memories
# whose version has moved on since they were read. FOR SHARE waits for an
# UpdateMemory that took the row when _WRITE let go of it, and then reads
# its committed version. A vector of the new content that such an update
# wrote itself goes too: the memory is then missing one, which the next run
# fills, never holding a wrong one.
_DROP_CHANGED = NamedSQL.compile("""
WITH current AS (
    SELECT id, user_id, version FROM user_memories WHERE id = ANY(:ids::bigint[]) FOR SHARE
)
DELETE FROM memory_embeddings e
USING current m, unnest(:ids::bigint[], :versions::int[]) AS b(id, version)
WHERE m.id = b.id AND m.version <> b.version
  AND e.user_id = m.user_id AND e.memory_id = m.id AND e.model = :model
""")

# In batches by ctid, as the request-key sweep does: short transactions.
_DROP_OTHER_MODELS = NamedSQL.compile("""
DELETE FROM memory_embeddings WHERE ctid IN (
    SELECT ctid FROM memory_embeddings
    WHERE model <> :model AND (:user_id::uuid IS NULL OR user_id = :user_id)
    LIMIT :limit
)
""")


@dataclass(frozen=True, slots=True)
class Unembedded:
    """A memory without a vector of the model, as read: its version guards the write."""

    id: int
    user_id: uuid.UUID
    content: str
    version: int


class EmbeddingStore:
    """Statements over every user's memories: run them acting as session.ALL_USERS."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def count_missing(self, model: str, user_id: uuid.UUID | None) -> int:
        params = {"model": model, "user_id": user_id}
        async with self._db.connection() as conn:
            count: int = await conn.fetchval(_COUNT_MISSING.sql, *_COUNT_MISSING.args(params))
        return count

    async def read_missing(
        self, model: str, user_id: uuid.UUID | None, after_id: int, limit: int
    ) -> list[Unembedded]:
        """Up to `limit` memories with an id above `after_id` and no vector of `model`."""
        params = {"model": model, "user_id": user_id, "after_id": after_id, "limit": limit}
        async with self._db.connection() as conn:
            rows = await conn.fetch(_READ_MISSING.sql, *_READ_MISSING.args(params))
        return [Unembedded(r["id"], r["user_id"], r["content"], r["version"]) for r in rows]

    async def write(
        self, model: str, memories: Sequence[Unembedded], vectors: Sequence[Sequence[float]]
    ) -> list[Unembedded]:
        """Store each memory's vector unless its version moved on; return those stored."""
        params = {
            "model": model,
            "ids": [m.id for m in memories],
            "versions": [m.version for m in memories],
            "embeddings": [vector_text(v) for v in vectors],
        }
        async with self._db.connection() as conn:
            rows = await conn.fetch(_WRITE.sql, *_WRITE.args(params))
        written = {r["memory_id"] for r in rows}
        return [m for m in memories if m.id in written]

    async def drop_changed(self, model: str, memories: Sequence[Unembedded]) -> int:
        """After `write`, with what it stored: delete the vectors of memories changed since."""
        params = {
            "model": model,
            "ids": [m.id for m in memories],
            "versions": [m.version for m in memories],
        }
        async with self._db.connection() as conn:
            status: str = await conn.execute(_DROP_CHANGED.sql, *_DROP_CHANGED.args(params))
        return int(status.split()[-1])

    async def drop_other_models(self, model: str, user_id: uuid.UUID | None, limit: int) -> int:
        """Delete up to `limit` vectors of models other than `model`; return how many went."""
        params = {"model": model, "user_id": user_id, "limit": limit}
        async with self._db.connection() as conn:
            status: str = await conn.execute(
                _DROP_OTHER_MODELS.sql, *_DROP_OTHER_MODELS.args(params)
            )
        return int(status.split()[-1])
