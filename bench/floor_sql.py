"""The service's own SQL, issued directly: what both floors run.

Statements are imported from memory_service.storage, never copied, so a
change to the service's SQL changes the floor with it. Each function turns
the same request message the load generator sends to the service into
(statement, arguments) with the values the service would bind for it
(default weights, half-life and learning rate, no visibility limits: the
benchmark's service runs without auth, acting for all users). The floors
run them through `Database` (storage/database.py), so the per-transaction
session setup (BEGIN + set_config, COMMIT) is the service's too.

Row -> message builders here are the floor's "as direct as possible"
answer: protobuf fields set straight from asyncpg records, without the
service's domain objects in between.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg
from faraday.memory.v1 import (
    lesson_pb2,
    lesson_service_pb2,
    memory_pb2,
    memory_service_pb2,
)

from memory_service import config
from memory_service.config import Settings
from memory_service.domain import ranking
from memory_service.domain.feedback import DEFAULT_LEARNING_RATE
from memory_service.domain.models import RECALL_DEFAULT_LIMIT, Embedding
from memory_service.rpc.wire import fill_timestamp, fill_value, struct_to_dict
from memory_service.storage import lessons as lesson_sql
from memory_service.storage import memories as memory_sql
from memory_service.storage.database import Database
from memory_service.storage.named_sql import NamedSQL
from memory_service.storage.recall_log import RecallLog

Statement = tuple[str, list[Any]]

HALF_LIFE_SECONDS = ranking.DEFAULT_WEIGHTS.half_life.total_seconds()


def _bind(statement: NamedSQL, params: dict[str, Any], rpc: str) -> Statement:
    """The statement's arguments; a clear error when the service's SQL has grown a parameter."""
    missing = [name for name in statement.names if name not in params]
    if missing:
        raise RuntimeError(
            f"the service's {rpc} SQL now takes {', '.join(missing)}: bind it in bench/floor_sql.py"
            " as memory_service.storage does"
        )
    return statement.sql, statement.args(params)


def query_embedding(request: memory_service_pb2.RecallMemoriesRequest) -> Embedding | None:
    """The caller's query vector, as sent (the floor does not validate it)."""
    if not request.query_embedding:
        return None
    return Embedding(request.embedding_model, tuple(request.query_embedding))


def recall(
    request: memory_service_pb2.RecallMemoriesRequest,
    log: bool = True,
    embedding: Embedding | None = None,
) -> Statement:
    """`embedding`: the query's vector (the caller's, or the server's embedding of the query).

    `log` as the service's setting; a request's skip_access_tracking turns it off, as there.
    """
    log = log and not request.skip_access_tracking
    weights = ranking.DEFAULT_WEIGHTS
    semantic = embedding is not None and weights.semantic > 0
    dimension = len(embedding.vector) if embedding is not None and semantic else 0
    model = embedding.model if embedding is not None and semantic else ""
    statement = memory_sql._recall_sql(bool(request.query), dimension, log, model)
    limit = request.limit or RECALL_DEFAULT_LIMIT
    params = {
        "profiles": None,
        "user_id": uuid.UUID(request.user_id),
        "query": request.query,
        "logged_query": request.query,
        "w_importance": weights.importance,
        "w_recency": weights.recency,
        "w_relevance": weights.relevance,
        "w_semantic": weights.semantic,
        "half_life_seconds": HALF_LIFE_SECONDS,
        "assistant_profile_id": None,
        "categories": [],
        "tags": [],
        "match_all_tags": False,
        "context": None,
        "min_importance": 0.0,
        "created_from": None,
        "created_before": None,
        "metadata": None,
        "updated_from": None,
        "updated_before": None,
        "accessed_from": None,
        "accessed_before": None,
        "limit": limit,
        "fully_scored_postings": memory_sql.FULLY_SCORED_POSTINGS,
        "probe_cost": memory_sql.PROBE_COST,
    }
    if semantic:
        assert embedding is not None
        vector = memory_sql._embedding_params(embedding)
        params |= {
            "model": vector["model"],
            "query_embedding": vector["embedding"],
            "semantic_exact_max": memory_sql.SEMANTIC_EXACT_MAX_MEMORIES,
        }
    return _bind(statement, params, "RecallMemories")


def recall_log(settings: Settings, db: Database) -> RecallLog | None:
    """A started recall log as the service's, from the same settings (None: inline)."""
    if settings.recall_log_interval_seconds <= 0:
        return None
    log = RecallLog(db, settings.recall_log_interval_seconds, settings.recall_log_max_pending_rows)
    log.start()
    return log


@dataclass(frozen=True)
class Recall:
    """A recall ready to run as MemoryStore.recall runs it (`run_recall`)."""

    statement: Statement
    log_inline: bool  # the statement logs; its commit does not wait for the flush
    queue: RecallLog | None  # or the read's rows are queued here, the service's default
    user_id: uuid.UUID
    query: str


def prepare_recall(
    request: memory_service_pb2.RecallMemoriesRequest,
    log: bool,
    embedding: Embedding | None,
    recall_log: RecallLog | None,
) -> Recall:
    """`recall_log`: the floor's own, as the service's (storage/recall_log.py)."""
    log = log and not request.skip_access_tracking
    queue = recall_log if log else None
    return Recall(
        recall(request, log and queue is None, embedding),
        log and queue is None,
        queue,
        uuid.UUID(request.user_id),
        request.query,
    )


async def run_recall(db: Database, prepared: Recall) -> list[asyncpg.Record]:
    """The read with generic plans; its bookkeeping queued or, inline, committed
    without waiting for the WAL flush: as MemoryStore.recall does."""
    sql, args = prepared.statement
    rows: list[asyncpg.Record] = await db.fetch(
        sql,
        *args,
        generic_plan=True,
        async_commit=prepared.log_inline,
        read_only=not prepared.log_inline,
    )
    if prepared.queue is not None and rows:
        await prepared.queue.add(
            prepared.user_id, [(r["id"], r["score"], True) for r in rows], prepared.query
        )
    return rows


def store(
    request: memory_service_pb2.StoreMemoryRequest, embedding: Embedding | None = None
) -> Statement:
    """`embedding`: the server's embedding of the content (the service stores it alongside)."""
    m = request.memory
    params = {
        "user_id": uuid.UUID(m.user_id),
        "assistant_profile_id": m.assistant_profile_id or None,
        "content": m.content,
        "context": struct_to_dict(m.context),
        "importance": m.importance if m.HasField("importance") else 0.5,
        "category": m.category,
        "tags": list(m.tags),
        "source": m.source or None,
        "confidence": m.confidence if m.HasField("confidence") else None,
        "expires_at": None,
        "metadata": struct_to_dict(m.metadata),
    }
    if embedding is not None:
        params |= memory_sql._embedding_params(embedding)
    return _bind(memory_sql._store_sql(False, embedding is not None), params, "StoreMemory")


# A service token names a memory by id alone: the service first asks whose it
# is (one statement, in the same transaction), then names it by (user, id).
OWNER_OF_MEMORY = memory_sql.OWNER_OF_MEMORY


def feedback(request: memory_service_pb2.RecordFeedbackRequest, owner: uuid.UUID) -> Statement:
    if request.WhichOneof("signal") == "helpful":
        target = 1.0 if request.helpful else 0.0
        given: dict[str, Any] = {"helpful": request.helpful}
    else:
        target = (request.rating - 1) / 4
        given = {"rating": request.rating}
    statement = memory_sql._FEEDBACK
    params = {
        "id": request.memory_id,
        "user_id": owner,
        "learning_rate": DEFAULT_LEARNING_RATE,
        "target": target,
        "context": struct_to_dict(request.context),
        "feedback": given,
        "owner": None,
        "profiles": None,
    }
    return _bind(statement, params, "RecordFeedback")


def get_lesson(request: lesson_service_pb2.GetLessonRequest) -> Statement:
    return lesson_sql._GET, [request.id]


def _lesson_params(**given: Any) -> dict[str, Any]:
    return {name: None for name in lesson_sql._CONDITIONS} | given


def list_lessons(request: lesson_service_pb2.ListLessonsRequest) -> Statement:
    params = _lesson_params(
        user_id=uuid.UUID(request.user_id) if request.user_id else None,
        limit=request.page_size + 1,  # as the service: one more, to know there is a next page
    )
    statement = lesson_sql._list_sql(lesson_sql._conditions(params))
    return _bind(statement, params, "ListLessons")


@functools.cache
def _search_cap() -> int:
    """The service's candidate cap, from the same environment the service reads."""
    return config.load().search_candidates_per_word


def search_lessons(request: lesson_service_pb2.SearchLessonsRequest) -> Statement:
    params = _lesson_params(query=request.query, offset=0, limit=request.page_size + 1)
    statement = lesson_sql._search_sql(lesson_sql._conditions(params), _search_cap())
    return _bind(statement, params, "SearchLessons")


# ---------------------------------------------------------------- rows -> messages


def _timestamp(target: Any, value: datetime | str | None) -> None:
    # The service's own filler (Timestamp.FromDatetime is several times slower).
    fill_timestamp(target, datetime.fromisoformat(value) if isinstance(value, str) else value)


def memory(row: Mapping[str, Any], prefix: str = "") -> memory_pb2.Memory:
    version = row["version"]
    out = memory_pb2.Memory(
        id=row["id"],
        user_id=str(row["user_id"]),
        assistant_profile_id=row["assistant_profile_id"] or 0,
        content=row["content"],
        importance=row["importance"],
        category=row["category"],
        tags=row["tags"],
        source=row["source"] or "",
        version=version,
        etag=f'W/"{version}"',
    )
    if row["confidence"] is not None:
        out.confidence = row["confidence"]
    if row["context"]:
        out.context.update(row["context"])
    if row["metadata"]:
        out.metadata.update(row["metadata"])
    _timestamp(out.create_time, row["created_at"])
    _timestamp(out.update_time, row["updated_at"])
    _timestamp(out.last_access_time, row["last_accessed"])
    _timestamp(out.expire_time, row["expires_at"])
    return out


def recall_response(rows: list[Any]) -> memory_service_pb2.RecallMemoriesResponse:
    return memory_service_pb2.RecallMemoriesResponse(
        memories=[
            memory_service_pb2.ScoredMemory(
                memory=memory(r),
                score=r["score"],
                importance_score=r["importance_score"],
                recency_score=r["recency_score"],
                relevance_score=r["relevance_score"],
                semantic_score=r["semantic_score"],
            )
            for r in rows
        ]
    )


def feedback_response(row: Mapping[str, Any]) -> memory_service_pb2.RecordFeedbackResponse:
    interaction = memory_pb2.Interaction(
        id=row["i_id"],
        memory_id=row["id"],
        user_id=str(row["user_id"]),
        type=memory_pb2.INTERACTION_TYPE_FEEDBACK,
    )
    _timestamp(interaction.create_time, row["i_timestamp"])
    if row["i_context"]:
        interaction.context.update(row["i_context"])
    if row["i_feedback"]:
        interaction.feedback.update(row["i_feedback"])
    return memory_service_pb2.RecordFeedbackResponse(memory=memory(row), interaction=interaction)


_STATUSES = {
    "draft": lesson_pb2.LESSON_STATUS_DRAFT,
    "published": lesson_pb2.LESSON_STATUS_PUBLISHED,
    "archived": lesson_pb2.LESSON_STATUS_ARCHIVED,
}
_LESSON_VALUES = ("objectives", "materials", "activities", "assessment_criteria", "feedback")


def lesson(row: Mapping[str, Any]) -> lesson_pb2.Lesson:
    """A lesson from a database row, or from the cache's JSON of one (strings for dates)."""
    out = lesson_pb2.Lesson(
        id=row["id"],
        title=row["title"],
        user_id=str(row["user_id"]),
        subject_category_id=row["subject_category_id"] or 0,
        subject_category_name=row["subject_category_name"] or "",
        assistant_profile_id=row["assistant_profile_id"] or 0,
        assistant_profile_name=row["assistant_profile_name"] or "",
        grade_level=row["grade_level"] or "",
        content_area=row["content_area"] or "",
        status=_STATUSES[row["status"]],
        tags=row["tags"],
        related_lesson_ids=row["related_lessons"],
    )
    week_of = row["week_of"]
    if week_of is not None:
        day = date.fromisoformat(week_of) if isinstance(week_of, str) else week_of
        out.week_of.year, out.week_of.month, out.week_of.day = day.year, day.month, day.day
    if row["lesson_data"]:
        out.lesson_data.update(row["lesson_data"])
    for name in _LESSON_VALUES:
        if row[name] is not None:
            fill_value(getattr(out, name), row[name])
    _timestamp(out.create_time, row["created_at"])
    _timestamp(out.update_time, row["updated_at"])
    return out


def lessons_response(rows: list[Any], page_size: int) -> lesson_service_pb2.ListLessonsResponse:
    return lesson_service_pb2.ListLessonsResponse(lessons=[lesson(r) for r in rows[:page_size]])


def search_response(rows: list[Any], page_size: int) -> lesson_service_pb2.SearchLessonsResponse:
    return lesson_service_pb2.SearchLessonsResponse(
        matches=[
            lesson_service_pb2.LessonMatch(lesson=lesson(r), rank=r["rank"])
            for r in rows[:page_size]
        ]
    )
