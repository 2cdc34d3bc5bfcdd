"""Every SQL statement of ImportMemories: one chunk of items, set-based, in one transaction.

A chunk (the items of one stream message, up to 1,000) is COPYed into a
temporary staging table (ON COMMIT DROP: nothing outlives the transaction,
so the pooled connection keeps no session state, see database.py), and one
script of set-based statements (one round trip: they take no parameters,
everything they read is in the staging table) decides and writes every
item:

1. the dedup locks of every (user, profile) of the chunk, in sorted order
   (so two chunks never wait on each other crosswise), the same locks
   StoreMemory's dedup takes: from here to the commit no other store or
   import of those users and profiles can add a duplicate or take an
   import id;
2. rejections StoreMemory would give: unknown user (NOT_FOUND), inactive
   user (FAILED_PRECONDITION, USER_INACTIVE), unknown assistant profile
   (NOT_FOUND). The users' rows are locked FOR SHARE first, so a
   deactivation that commits meanwhile waits for the chunk, as it orders
   after a StoreMemory's single statement. Taken after the dedup locks:
   a store holding one of those waits for no user row, so no cycle with an
   UpsertUser queued behind this chunk can form;
3. ALREADY_DONE: the (user, import_id) is in memory_import_ids, or repeats
   an earlier item of the chunk;
4. with SEMANTIC, each undecided item with its own vector is looked up
   one by one (dedup-store's nearest-memory statement) and merges into the
   nearest memory if similar enough; then with any dedup policy (EXACT, and
   SEMANTIC for the rest): an unexpired memory of the same user and profile with the same content
   key absorbs the item (DEDUPLICATED); among the rest, the first item of a
   content key is created and later ones of the same key merge into it;
5. the new memories in one INSERT ... SELECT, with their original times,
   ids drawn beforehand in stream order (the BM25 postings trigger of
   migration 0010 is per statement, so one insert of 1,000 rows fires it
   once; the updated_at trigger fires only on UPDATE);
6. the merges: the absorbing memories are read FOR UPDATE, their new values
   folded in stream order with dedup-store's rule (domain.dedup.merged, the
   one StoreMemory uses), and written back one row each in one pipelined
   executemany (version + 1 once per chunk, the updated_at trigger sets
   now, the revision trigger keeps the old values). Duplicates are few, so
   this is a round trip or two, not per item;
7. memory_import_ids for every created or deduplicated item, a `store`
   interaction per created memory (context {"import_id"}), a `merge` per
   deduplicated item (context {"policy", "via": "import", "import_id"},
   "similarity" for semantic), and the items' own vectors.

The statements' joins against the big tables are correlated subqueries, so
each item is one index probe whatever the planner makes of the temporary
table (analyzed once it is filled, for the joins of the staging table with
itself).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from memory_service.domain import dedup as dedup_rule
from memory_service.domain.dedup import Dedup, DedupPolicy
from memory_service.domain.errors import (
    Contention,
    DomainError,
    NotFound,
    UserInactive,
)
from memory_service.domain.imports import ImportItem, ItemResult, Outcome
from memory_service.storage.database import Database
from memory_service.storage.dedup import lock_for_dedup, semantic_sql
from memory_service.storage.embeddings import vector_text

_STAGING = """
CREATE TEMPORARY TABLE import_staging (
    ord bigint PRIMARY KEY,
    user_id uuid NOT NULL,
    assistant_profile_id integer,
    import_id text NOT NULL,
    content text NOT NULL,
    context text NOT NULL,
    importance double precision NOT NULL,
    category text NOT NULL,
    tags text[] NOT NULL,
    source text,
    confidence double precision,
    expires_at timestamptz,
    metadata text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_accessed timestamptz,
    embedding_model text,
    embedding text,
    -- decided by the script
    outcome text,
    memory_id bigint,
    first_ord bigint,
    content_key bytea,
    similarity double precision
) ON COMMIT DROP
"""

_COPIED = (
    "ord",
    "user_id",
    "assistant_profile_id",
    "import_id",
    "content",
    "context",
    "importance",
    "category",
    "tags",
    "source",
    "confidence",
    "expires_at",
    "metadata",
    "created_at",
    "updated_at",
    "last_accessed",
    "embedding_model",
    "embedding",
)

_CHECK = """
ANALYZE import_staging;
SELECT FROM users WHERE id IN (SELECT user_id FROM import_staging) ORDER BY id FOR SHARE;
UPDATE import_staging s SET outcome = 'no_user'
WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = s.user_id);
UPDATE import_staging s SET outcome = 'inactive'
WHERE outcome IS NULL AND EXISTS (SELECT FROM users u WHERE u.id = s.user_id AND NOT u.is_active);
UPDATE import_staging s SET outcome = 'no_profile'
WHERE outcome IS NULL AND assistant_profile_id IS NOT NULL
  AND NOT EXISTS (SELECT FROM assistant_profiles p WHERE p.id = s.assistant_profile_id);
UPDATE import_staging s SET outcome = 'already', memory_id = (
    SELECT i.memory_id FROM memory_import_ids i
    WHERE i.user_id = s.user_id AND i.import_id = s.import_id)
WHERE outcome IS NULL AND EXISTS (
    SELECT FROM memory_import_ids i WHERE i.user_id = s.user_id AND i.import_id = s.import_id);
UPDATE import_staging s SET outcome = 'repeat', first_ord = f.ord
FROM (SELECT user_id, import_id, min(ord) AS ord FROM import_staging WHERE outcome IS NULL
      GROUP BY 1, 2 HAVING count(*) > 1) f
WHERE s.outcome IS NULL AND s.user_id = f.user_id AND s.import_id = f.import_id AND s.ord > f.ord;
"""

# Items with dedup not yet decided (a semantic match may have been found
# between the two scripts) against the user's and profile's unexpired
# memories, then against each other.
_EXACT = """
UPDATE import_staging SET content_key = faraday_content_key(content)
WHERE outcome IS NULL AND memory_id IS NULL;
UPDATE import_staging s SET memory_id = (
    SELECT m.id FROM user_memories m
    WHERE m.user_id = s.user_id AND m.content_key = s.content_key
      AND m.assistant_profile_id IS NOT DISTINCT FROM s.assistant_profile_id
      AND (m.expires_at IS NULL OR m.expires_at > now())
    ORDER BY m.id LIMIT 1)
WHERE outcome IS NULL AND content_key IS NOT NULL;
UPDATE import_staging SET outcome = 'merge' WHERE outcome IS NULL AND memory_id IS NOT NULL;
UPDATE import_staging s SET outcome = 'merge', first_ord = f.ord
FROM (SELECT user_id, assistant_profile_id, content_key, min(ord) AS ord FROM import_staging
      WHERE outcome IS NULL AND content_key IS NOT NULL GROUP BY 1, 2, 3 HAVING count(*) > 1) f
WHERE s.outcome IS NULL AND s.user_id = f.user_id AND s.content_key = f.content_key
  AND s.assistant_profile_id IS NOT DISTINCT FROM f.assistant_profile_id AND s.ord > f.ord;
"""
_SEMANTIC_MATCHED = """
UPDATE import_staging SET outcome = 'merge' WHERE outcome IS NULL AND memory_id IS NOT NULL;
"""
_SEMANTIC_CANDIDATES = """
SELECT ord FROM import_staging WHERE outcome IS NULL AND embedding IS NOT NULL ORDER BY ord
"""
_SEMANTIC_MATCH = "UPDATE import_staging SET memory_id = $2, similarity = $3 WHERE ord = $1"

_CREATE = """
UPDATE import_staging s SET outcome = 'create', memory_id = n.id
FROM (SELECT ord, nextval(pg_get_serial_sequence('user_memories', 'id')) AS id
      FROM import_staging WHERE outcome IS NULL ORDER BY ord) n
WHERE s.ord = n.ord;
UPDATE import_staging s SET memory_id = f.memory_id
FROM import_staging f
WHERE s.outcome IN ('merge', 'repeat') AND s.memory_id IS NULL AND f.ord = s.first_ord;
UPDATE import_staging SET outcome = 'already' WHERE outcome = 'repeat';
INSERT INTO user_memories (id, user_id, assistant_profile_id, content, context, importance,
                           category, tags, source, confidence, expires_at, metadata,
                           created_at, updated_at, last_accessed, import_id)
SELECT memory_id, user_id, assistant_profile_id, content, context::jsonb, importance,
       category, tags, source, confidence, expires_at, metadata::jsonb,
       created_at, updated_at, last_accessed, import_id
FROM import_staging WHERE outcome = 'create' ORDER BY memory_id;
"""
# The items merged into each memory, in stream order (DedupPolicy's rule is
# applied in that order, as for stores one after the other).
_MERGED_ITEMS = """
SELECT ord, user_id, memory_id FROM import_staging WHERE outcome = 'merge'
ORDER BY memory_id, ord
"""
# The memories absorbing them, locked: their new values are computed here.
# Named by (user_id, id), as every key of user_memories (migration 0017).
_MERGE_TARGETS = """
SELECT m.id, m.tags, m.importance, m.expires_at, m.metadata, m.confidence
FROM unnest($1::uuid[], $2::bigint[]) AS t (user_id, id)
JOIN user_memories m ON m.user_id = t.user_id AND m.id = t.id
ORDER BY m.id FOR UPDATE OF m
"""
# One change per memory however many items it absorbs: version + 1, the
# updated_at trigger sets now, migration 0013's trigger keeps a revision.
_MERGE = """
UPDATE user_memories
SET tags = $2, importance = $3, expires_at = $4, metadata = $5, confidence = $6,
    version = version + 1
WHERE user_id = $7 AND id = $1
"""

_RECORD = """
INSERT INTO memory_import_ids (user_id, import_id, memory_id)
SELECT user_id, import_id, memory_id FROM import_staging WHERE outcome IN ('create', 'merge');
INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
SELECT memory_id, user_id,
       CASE outcome WHEN 'create' THEN 'store' ELSE 'merge' END,
       CASE outcome WHEN 'create' THEN jsonb_build_object('import_id', import_id)
       ELSE jsonb_build_object('policy', CASE WHEN similarity IS NULL THEN 'exact'
                                              ELSE 'semantic' END,
                               'via', 'import', 'import_id', import_id)
            || CASE WHEN similarity IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('similarity', similarity) END
       END
FROM import_staging WHERE outcome IN ('create', 'merge') ORDER BY ord;
"""
_RECORD_VECTORS = """
INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)
SELECT user_id, memory_id, embedding_model, embedding::vector
FROM import_staging WHERE outcome = 'create' AND embedding IS NOT NULL;
"""

_RESULTS = "SELECT ord, outcome, memory_id FROM import_staging ORDER BY ord"

_OUTCOMES = {
    "create": Outcome.CREATED,
    "merge": Outcome.DEDUPLICATED,
    "already": Outcome.ALREADY_DONE,
}

# Retries of a chunk that collided with a concurrent one (a deadlock, or an
# import id taken by a stream of another profile, which the dedup locks do
# not order); the chunk rolled back whole, so running it again is safe.
CHUNK_ATTEMPTS = 3


def _rejection(code: str, item: ImportItem) -> DomainError:
    memory = item.memory
    if code == "no_user":
        return NotFound("user", memory.user_id)
    if code == "inactive":
        return UserInactive(memory.user_id)
    return NotFound("assistant_profile", memory.assistant_profile_id)


def _record(item: ImportItem) -> tuple[Any, ...]:
    m = item.memory
    embedding = m.embedding
    return (
        item.index,
        m.user_id,
        m.assistant_profile_id,
        item.import_id,
        m.content,
        json.dumps(m.context if m.context is not None else {}),
        m.importance,
        m.category,
        m.tags,
        m.source,
        m.confidence,
        m.expires_at,
        json.dumps(m.metadata if m.metadata is not None else {}),
        item.created_at,
        item.updated_at,
        item.last_accessed,
        None if embedding is None else embedding.model,
        None if embedding is None else vector_text(embedding.vector),
    )


def _values(item: ImportItem) -> dedup_rule.Existing:
    m = item.memory
    return dedup_rule.Existing(
        tags=m.tags,
        importance=m.importance,
        expires_at=m.expires_at,
        metadata=m.metadata if m.metadata is not None else {},
        confidence=m.confidence,
    )


class ImportStore:
    def __init__(self, db: Database, *, vectors: bool = False, dimension: int = 0) -> None:
        """`vectors`: the database has memory_embeddings (pgvector, migration 0011);
        `dimension`: the configured model's, which items' own vectors have."""
        self._db = db
        self.vectors = vectors
        self._dimension = dimension

    async def import_chunk(
        self,
        items: Sequence[ImportItem],
        dedup: Dedup,
        *,
        after: asyncio.Event | None = None,
        locked: asyncio.Event | None = None,
    ) -> list[ItemResult]:
        """Import one chunk; the result of every item, in order. Commits or writes nothing.

        With `after`, the chunk takes its dedup locks only once `after` is set
        (the chunk before it holds its locks, or is done); `locked` is set
        once this one holds its own, or is done, whatever the outcome.
        """
        try:
            if not items:
                return []
            for attempt in range(CHUNK_ATTEMPTS):
                try:
                    return await self._import_chunk(items, dedup, after, locked)
                except Contention:
                    if attempt + 1 == CHUNK_ATTEMPTS:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if locked is not None:
                locked.set()

    async def _import_chunk(
        self,
        items: Sequence[ImportItem],
        dedup: Dedup,
        after: asyncio.Event | None,
        locked: asyncio.Event | None,
    ) -> list[ItemResult]:
        by_index = {item.index: item for item in items}
        try:
            async with self._db.connection() as conn:
                await conn.execute(_STAGING)
                await conn.copy_records_to_table(
                    "import_staging", records=[_record(i) for i in items], columns=_COPIED
                )
                if after is not None:
                    await after.wait()
                # Every pair, even of items about to be rejected: harmless, and
                # taken before the users' rows (see the module's comment).
                await lock_for_dedup(
                    conn, ((i.memory.user_id, i.memory.assistant_profile_id) for i in items)
                )
                if locked is not None:
                    locked.set()
                await conn.execute(_CHECK)
                if dedup.policy is DedupPolicy.SEMANTIC and self.vectors:
                    await self._semantic_matches(conn, by_index, dedup.min_similarity or 1.0)
                    await conn.execute(_SEMANTIC_MATCHED)
                if dedup.active:
                    await conn.execute(_EXACT)
                await conn.execute(_CREATE)
                await self._merge(conn, by_index)
                await conn.execute(_RECORD + (_RECORD_VECTORS if self.vectors else ""))
                rows = await conn.fetch(_RESULTS)
        except asyncpg.UniqueViolationError as exc:
            # Another stream took one of these import ids for another
            # profile between our check and our insert (the dedup locks
            # order only same-profile writers): retry, it is ALREADY_DONE now.
            raise Contention("a concurrent import took the same import id") from exc
        except asyncpg.ForeignKeyViolationError as exc:
            # A profile deleted between the check and the insert: the retry
            # rejects its items.
            raise Contention("an assistant profile went away during the import") from exc
        return _results(items, rows)

    async def _semantic_matches(
        self, conn: asyncpg.Connection, by_index: dict[int, ImportItem], min_similarity: float
    ) -> None:
        """Per undecided item with its own vector: its nearest memory, if similar enough.

        dedup-store's look-up (storage/dedup.py semantic_sql), one per item.
        """
        for row in await conn.fetch(_SEMANTIC_CANDIDATES):
            memory = by_index[row["ord"]].memory
            assert memory.embedding is not None
            statement = semantic_sql("id", self._dimension, memory.embedding.model)
            nearest = await conn.fetchrow(
                statement.sql,
                *statement.args(
                    {
                        "embedding": vector_text(memory.embedding.vector),
                        "user_id": memory.user_id,
                        "assistant_profile_id": memory.assistant_profile_id,
                    }
                ),
            )
            if nearest is not None and nearest["similarity"] >= min_similarity:
                await conn.execute(
                    _SEMANTIC_MATCH, row["ord"], nearest["id"], round(nearest["similarity"], 6)
                )

    @staticmethod
    async def _merge(conn: asyncpg.Connection, by_index: dict[int, ImportItem]) -> None:
        """Each absorbing memory's new values, by dedup-store's rule (domain.dedup.merged)."""
        merged_items = await conn.fetch(_MERGED_ITEMS)
        if not merged_items:
            return
        owners = {r["memory_id"]: r["user_id"] for r in merged_items}
        targets = {
            row["id"]: dedup_rule.Existing(
                tags=list(row["tags"]),
                importance=row["importance"],
                expires_at=row["expires_at"],
                metadata=row["metadata"],
                confidence=row["confidence"],
            )
            for row in await conn.fetch(_MERGE_TARGETS, list(owners.values()), list(owners))
        }
        for row in merged_items:  # by memory, then in stream order
            memory_id = row["memory_id"]
            targets[memory_id] = dedup_rule.merged(
                targets[memory_id], _values(by_index[row["ord"]])
            )
        await conn.executemany(
            _MERGE,
            [
                (
                    memory_id,
                    v.tags,
                    v.importance,
                    v.expires_at,
                    v.metadata,
                    v.confidence,
                    owners[memory_id],
                )
                for memory_id, v in sorted(targets.items())
            ],
        )


def _results(items: Sequence[ImportItem], rows: list[asyncpg.Record]) -> list[ItemResult]:
    decided = {row["ord"]: row for row in rows}
    results = []
    for item in items:
        row = decided[item.index]
        outcome = _OUTCOMES.get(row["outcome"])
        if outcome is None:
            error = _rejection(row["outcome"], item)
            results.append(ItemResult(item.index, item.import_id, Outcome.REJECTED, error=error))
        else:
            results.append(ItemResult(item.index, item.import_id, outcome, row["memory_id"]))
    return results
