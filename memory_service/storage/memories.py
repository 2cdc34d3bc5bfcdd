"""Every SQL statement on user_memories and memory_interactions."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import asyncpg

from memory_service.domain.errors import NotFound, StaleEtag
from memory_service.domain.models import (
    Feedback,
    Interaction,
    InteractionFilter,
    InteractionType,
    Memory,
    MemoryFilter,
    MemoryPatch,
    NewMemory,
    Page,
    RecallQuery,
    ScoredMemory,
)
from memory_service.storage.database import Database
from memory_service.storage.named_sql import NamedSQL

MEMORY_COLUMNS = (
    "id, user_id, assistant_profile_id, content, context, importance, category, tags, source,"
    " confidence, version, created_at, updated_at, last_accessed, expires_at, metadata"
)
INTERACTION_COLUMNS = 'id, memory_id, user_id, interaction_type, "timestamp", context, feedback'

_FOREIGN_KEYS = {
    "fk_user_memories_user_id_users": "user",
    "fk_user_memories_assistant_profile_id_assistant_profiles": "assistant_profile",
}

_STORE = NamedSQL.compile(f"""
WITH m AS (
    INSERT INTO user_memories (user_id, assistant_profile_id, content, context, importance,
                               category, tags, source, confidence, expires_at, metadata)
    VALUES (:user_id, :assistant_profile_id, :content, :context, :importance,
            :category, :tags, :source, :confidence, :expires_at, :metadata)
    RETURNING {MEMORY_COLUMNS}
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type)
    SELECT id, user_id, 'store' FROM m
)
SELECT {MEMORY_COLUMNS} FROM m
""")

_GET = f"SELECT {MEMORY_COLUMNS} FROM user_memories WHERE id = $1"
_VERSION = "SELECT version FROM user_memories WHERE id = $1"

_DELETE = """
DELETE FROM user_memories WHERE id = $1 AND ($2::int IS NULL OR version = $2) RETURNING id
"""

_LIST = NamedSQL.compile(f"""
SELECT {MEMORY_COLUMNS} FROM user_memories
WHERE user_id = :user_id
  AND (expires_at IS NULL OR expires_at > now())
  AND (:assistant_profile_id::int IS NULL OR assistant_profile_id = :assistant_profile_id)
  AND (cardinality(:categories::text[]) = 0 OR category = ANY(:categories::text[]))
  AND tags @> :tags::text[]
  AND (:after_time::timestamptz IS NULL OR (created_at, id) < (:after_time, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""")

_FEEDBACK = NamedSQL.compile(f"""
WITH old AS (
    SELECT id, importance FROM user_memories WHERE id = :memory_id FOR UPDATE
), m AS (
    UPDATE user_memories u
    SET importance = least(1.0, greatest(0.0,
            u.importance + :learning_rate::float8 * (:target::float8 - u.importance))),
        version = u.version + 1
    FROM old WHERE u.id = old.id
    RETURNING u.*, old.importance AS importance_before
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context, feedback)
    SELECT id, user_id, 'feedback', :context::jsonb,
           :feedback::jsonb || jsonb_build_object('importance_before', importance_before,
                                                  'importance_after', importance)
    FROM m
    RETURNING {INTERACTION_COLUMNS}
)
SELECT {", ".join("m." + c.strip() for c in MEMORY_COLUMNS.split(","))},
       logged.id AS i_id, logged."timestamp" AS i_timestamp,
       logged.context AS i_context, logged.feedback AS i_feedback
FROM m, logged
""")

_LIST_INTERACTIONS = NamedSQL.compile(f"""
SELECT {INTERACTION_COLUMNS} FROM memory_interactions
WHERE (:user_id::uuid IS NULL OR user_id = :user_id)
  AND (:memory_id::bigint IS NULL OR memory_id = :memory_id)
  AND (:type::text IS NULL OR interaction_type = :type)
  AND (:start_time::timestamptz IS NULL OR "timestamp" >= :start_time)
  AND (:end_time::timestamptz IS NULL OR "timestamp" < :end_time)
  AND (:after_time::timestamptz IS NULL OR ("timestamp", id) < (:after_time, :after_id::bigint))
ORDER BY "timestamp" DESC, id DESC
LIMIT :limit
""")

_SWEEP = """
DELETE FROM user_memories WHERE id IN (
    SELECT id FROM user_memories WHERE expires_at <= now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""


@functools.cache
def _recall_sql(with_query: bool, log: bool) -> NamedSQL:
    """One statement ranks, bumps last_accessed and logs: one round trip per recall.

    The score here must match domain.ranking.score_parts.
    """
    if with_query:
        # OR of the query's stemmed words: a memory matching any word is a
        # candidate, and ts_rank_cd rewards matching more of them. A query of
        # stop words only has no lexemes (numnode 0) and filters nothing.
        source = (
            "(SELECT replace(plainto_tsquery('english', :query)::text, ' & ', ' | ')::tsquery"
            " AS tsq) q, user_memories"
        )
        relevance = "ts_rank_cd(to_tsvector('english', content), q.tsq, 32)"
        match = "AND (numnode(q.tsq) = 0 OR to_tsvector('english', content) @@ q.tsq)"
    else:
        source, relevance, match = "user_memories", "0.0", ""
    order = "score DESC, created_at DESC, id DESC"
    sql = f"""
WITH top AS (
    SELECT *, importance_score + recency_score + relevance_score AS score FROM (
        SELECT {MEMORY_COLUMNS},
               :w_importance::float8 * importance AS importance_score,
               :w_recency::float8 * power(0.5::float8,
                   greatest(extract(epoch FROM now() - updated_at)::float8, 0.0)
                   / :half_life_seconds::float8) AS recency_score,
               :w_relevance::float8 * {relevance} AS relevance_score
        FROM {source}
        WHERE user_id = :user_id
          AND (expires_at IS NULL OR expires_at > now())
          {match}
          AND (:assistant_profile_id::int IS NULL OR assistant_profile_id IS NULL
               OR assistant_profile_id = :assistant_profile_id)
          AND (cardinality(:categories::text[]) = 0 OR category = ANY(:categories::text[]))
          AND (cardinality(:tags::text[]) = 0 OR CASE WHEN :match_all_tags::bool
               THEN tags @> :tags::text[] ELSE tags && :tags::text[] END)
          AND (:context::jsonb IS NULL OR context @> :context::jsonb)
          AND importance >= :min_importance::float8
          AND (:created_from::timestamptz IS NULL OR created_at >= :created_from)
          AND (:created_before::timestamptz IS NULL OR created_at < :created_before)
    ) candidates
    ORDER BY {order}
    LIMIT :limit
)"""
    if log:
        sql += f""", bumped AS (
    UPDATE user_memories u SET last_accessed = now() FROM top WHERE u.id = top.id
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
    SELECT id, user_id, 'recall',
           jsonb_build_object('rank', row_number() OVER (ORDER BY {order}),
                              'score', score, 'query', :logged_query::text)
    FROM top
)"""
    sql += f"\nSELECT * FROM top ORDER BY {order}"
    return NamedSQL.compile(sql)


def memory_from_row(row: asyncpg.Record) -> Memory:
    return Memory(
        id=row["id"],
        user_id=row["user_id"],
        assistant_profile_id=row["assistant_profile_id"],
        content=row["content"],
        context=row["context"],
        importance=row["importance"],
        category=row["category"],
        tags=list(row["tags"]),
        source=row["source"],
        confidence=row["confidence"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_accessed=row["last_accessed"],
        expires_at=row["expires_at"],
        metadata=row["metadata"],
    )


def _interaction(row: asyncpg.Record) -> Interaction:
    return Interaction(
        id=row["id"],
        memory_id=row["memory_id"],
        user_id=row["user_id"],
        type=InteractionType(row["interaction_type"]),
        created_at=row["timestamp"],
        context=row["context"],
        feedback=row["feedback"],
    )


def _missing_reference(exc: asyncpg.ForeignKeyViolationError, memory: NewMemory | None) -> NotFound:
    resource = _FOREIGN_KEYS.get(exc.constraint_name or "", "reference")
    key: object = "referenced by the memory"
    if memory is not None:
        key = memory.user_id if resource == "user" else memory.assistant_profile_id
    return NotFound(resource, key)


class MemoryStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(self, memory: NewMemory) -> Memory:
        params = {
            "user_id": memory.user_id,
            "assistant_profile_id": memory.assistant_profile_id,
            "content": memory.content,
            "context": memory.context,
            "importance": memory.importance,
            "category": memory.category,
            "tags": memory.tags,
            "source": memory.source,
            "confidence": memory.confidence,
            "expires_at": memory.expires_at,
            "metadata": memory.metadata,
        }
        try:
            row = await self._db.fetchrow(_STORE.sql, *_STORE.args(params))
        except asyncpg.ForeignKeyViolationError as exc:
            raise _missing_reference(exc, memory) from exc
        assert row is not None
        return memory_from_row(row)

    async def get(self, memory_id: int) -> Memory:
        row = await self._db.fetchrow(_GET, memory_id)
        if row is None:
            raise NotFound("memory", memory_id)
        return memory_from_row(row)

    async def update(self, patch: MemoryPatch, changed_paths: list[str]) -> Memory:
        columns = list(patch.values)
        assignments = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
        sql = f"""
WITH m AS (
    UPDATE user_memories SET {assignments}, version = version + 1
    WHERE id = $1 AND ($2::int IS NULL OR version = $2)
    RETURNING {MEMORY_COLUMNS}
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
    SELECT id, user_id, 'update', ${len(columns) + 3}::jsonb FROM m
)
SELECT {MEMORY_COLUMNS} FROM m"""
        args = [patch.memory_id, patch.expected_version, *patch.values.values()]
        try:
            async with self._db.transaction() as conn:
                row = await conn.fetchrow(sql, *args, {"paths": changed_paths})
                if row is None:
                    await self._raise_missing_or_stale(conn, patch.memory_id)
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("assistant_profile", patch.values.get("assistant_profile_id")) from exc
        assert row is not None
        return memory_from_row(row)

    async def delete(self, memory_id: int, expected_version: int | None) -> None:
        async with self._db.transaction() as conn:
            deleted = await conn.fetchval(_DELETE, memory_id, expected_version)
            if deleted is None:
                await self._raise_missing_or_stale(conn, memory_id)

    @staticmethod
    async def _raise_missing_or_stale(conn: asyncpg.Connection, memory_id: int) -> None:
        version = await conn.fetchval(_VERSION, memory_id)
        if version is None:
            raise NotFound("memory", memory_id)
        raise StaleEtag(f"memory {memory_id} has changed (now at version {version}); re-read it")

    async def list_memories(
        self, f: MemoryFilter, after: tuple[datetime, int] | None, limit: int
    ) -> Page[Memory]:
        params = {
            "user_id": f.user_id,
            "assistant_profile_id": f.assistant_profile_id,
            "categories": f.categories,
            "tags": f.tags,
            "after_time": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        }
        rows = await self._db.fetch(_LIST.sql, *_LIST.args(params))
        items = [memory_from_row(r) for r in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(items, [last.created_at, last.id] if last else None)

    async def recall(self, q: RecallQuery, *, log: bool) -> list[ScoredMemory]:
        statement = _recall_sql(bool(q.query), log)
        params: dict[str, Any] = {
            "user_id": q.user_id,
            "query": q.query,
            "logged_query": q.query,
            "w_importance": q.weights.importance,
            "w_recency": q.weights.recency,
            "w_relevance": q.weights.relevance,
            "half_life_seconds": q.weights.half_life.total_seconds(),
            "assistant_profile_id": q.assistant_profile_id,
            "categories": q.categories,
            "tags": q.tags,
            "match_all_tags": q.match_all_tags,
            "context": q.context,
            "min_importance": q.min_importance,
            "created_from": q.created_from,
            "created_before": q.created_before,
            "limit": q.limit,
        }
        rows = await self._db.fetch(statement.sql, *statement.args(params))
        return [
            ScoredMemory(
                memory=memory_from_row(r),
                score=r["score"],
                importance_score=r["importance_score"],
                recency_score=r["recency_score"],
                relevance_score=r["relevance_score"],
            )
            for r in rows
        ]

    async def record_feedback(
        self, feedback: Feedback, target: float, learning_rate: float
    ) -> tuple[Memory, Interaction]:
        given: dict[str, Any] = (
            {"helpful": feedback.helpful}
            if feedback.helpful is not None
            else {"rating": feedback.rating}
        )
        if feedback.comment:
            given["comment"] = feedback.comment
        params = {
            "memory_id": feedback.memory_id,
            "learning_rate": learning_rate,
            "target": target,
            "context": feedback.context,
            "feedback": given,
        }
        row = await self._db.fetchrow(_FEEDBACK.sql, *_FEEDBACK.args(params))
        if row is None:
            raise NotFound("memory", feedback.memory_id)
        memory = memory_from_row(row)
        interaction = Interaction(
            id=row["i_id"],
            memory_id=memory.id,
            user_id=memory.user_id,
            type=InteractionType.FEEDBACK,
            created_at=row["i_timestamp"],
            context=row["i_context"],
            feedback=row["i_feedback"],
        )
        return memory, interaction

    async def list_interactions(
        self, f: InteractionFilter, after: tuple[datetime, int] | None, limit: int
    ) -> Page[Interaction]:
        params = {
            "user_id": f.user_id,
            "memory_id": f.memory_id,
            "type": f.type.value if f.type else None,
            "start_time": f.start,
            "end_time": f.end,
            "after_time": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        }
        rows = await self._db.fetch(_LIST_INTERACTIONS.sql, *_LIST_INTERACTIONS.args(params))
        items = [_interaction(r) for r in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(items, [last.created_at, last.id] if last else None)

    async def sweep_expired(self, batch_size: int) -> int:
        """Delete up to batch_size expired memories; return how many went."""
        async with self._db.connection() as conn:
            status: str = await conn.execute(_SWEEP, batch_size)
        return int(status.split()[-1])
