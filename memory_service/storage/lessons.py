"""Every SQL statement on lessons."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import asyncpg

from memory_service.domain import audit
from memory_service.domain.errors import InvalidArgument, NotFound
from memory_service.domain.models import (
    Lesson,
    LessonFilter,
    LessonMatch,
    LessonStatus,
    Page,
)
from memory_service.storage.database import Database
from memory_service.storage.named_sql import NamedSQL

_WRITABLE = (
    "title",
    "user_id",
    "subject_category_id",
    "assistant_profile_id",
    "grade_level",
    "week_of",
    "content_area",
    "lesson_data",
    "objectives",
    "materials",
    "activities",
    "assessment_criteria",
    "feedback",
    "status",
    "tags",
    "related_lessons",
)

LESSON_COLUMNS = ", ".join(
    [
        "l.id",
        *(f"l.{c}" for c in _WRITABLE),
        "sc.name AS subject_category_name",
        "ap.name AS assistant_profile_name",
        "l.created_at",
        "l.updated_at",
    ]
)

_RETURNED = ", ".join(("id", *_WRITABLE, "created_at", "updated_at"))

# LEFT JOINs: the platform's documentation joins with inner joins, which
# would hide every lesson without a subject or an assistant.
LESSON_NAMES_JOIN = """
LEFT JOIN subject_categories sc ON sc.id = l.subject_category_id
LEFT JOIN assistant_profiles ap ON ap.id = l.assistant_profile_id"""

# Ids travel as int64 on the wire but lessons.id is an int4: comparing with
# a bigint parameter makes an out-of-range id simply not found.
_GET = f"SELECT {LESSON_COLUMNS} FROM lessons l {LESSON_NAMES_JOIN} WHERE l.id = $1::bigint"

_INSERT = NamedSQL.compile(f"""
WITH l AS (
    INSERT INTO lessons ({", ".join(_WRITABLE)})
    VALUES ({", ".join(f":{c}" for c in _WRITABLE)})
    RETURNING {_RETURNED}
)
SELECT {LESSON_COLUMNS} FROM l {LESSON_NAMES_JOIN}
""")

_UPDATE = NamedSQL.compile(f"""
WITH l AS (
    UPDATE lessons SET {", ".join(f"{c} = :{c}" for c in _WRITABLE)}
    WHERE id = :id::bigint
    RETURNING {_RETURNED}
)
SELECT {LESSON_COLUMNS} FROM l {LESSON_NAMES_JOIN}
""")

_DELETE = "DELETE FROM lessons WHERE id = $1::bigint RETURNING id"

# The lessons whose GetLesson answer shows this subject's or assistant's name.
_REFERENCING = """
SELECT id FROM lessons WHERE subject_category_id = $1::int
UNION
SELECT id FROM lessons WHERE assistant_profile_id = $2::int
"""

# One predicate per filter. A statement holds only the predicates of the
# filters a request sets, so the planner sees plain conditions it can match
# to an index (the jsonb_path_ops GIN index for lesson_data @>, the GIN
# index for tags @>), rather than `(:x IS NULL OR ...)` that a generic plan
# cannot use an index for.
_CONDITIONS = {
    "user_id": "l.user_id = :user_id",
    "status": "l.status = :status",
    "week_of_start": "l.week_of >= :week_of_start",
    "week_of_end": "l.week_of <= :week_of_end",
    "grade_level": "l.grade_level = :grade_level",
    "subject_category_id": "l.subject_category_id = :subject_category_id",
    "subject_category_name": "sc.name = :subject_category_name",
    # A JSON array contains another when it has all of its elements.
    "tags": "l.tags @> :tags::jsonb",
    "lesson_data": "l.lesson_data @> :lesson_data::jsonb",
    "after_id": "l.id < :after_id::bigint",
    # A user-scoped caller: its own lessons and published ones (row-level
    # security says the same; this is the first wall).
    "visible_to": "(l.user_id = :visible_to::uuid OR l.status = 'published')",
}

_TSQUERY = "websearch_to_tsquery('english', :query)"


@functools.cache
def _list_sql(present: tuple[str, ...]) -> NamedSQL:
    where = " AND ".join(_CONDITIONS[name] for name in present) or "true"
    return NamedSQL.compile(f"""
SELECT {LESSON_COLUMNS} FROM lessons l {LESSON_NAMES_JOIN}
WHERE {where}
ORDER BY l.id DESC
LIMIT :limit
""")


@functools.cache
def _search_sql(present: tuple[str, ...]) -> NamedSQL:
    where = " AND ".join(_CONDITIONS[name] for name in present)
    # Normalization 32 maps the rank r to r / (r + 1): 0..1, as documented.
    return NamedSQL.compile(f"""
SELECT {LESSON_COLUMNS}, ts_rank_cd(l.search_vector, {_TSQUERY}, 32) AS rank
FROM lessons l {LESSON_NAMES_JOIN}
WHERE l.search_vector @@ {_TSQUERY} {"AND " + where if where else ""}
ORDER BY rank DESC, l.id DESC
OFFSET :offset
LIMIT :limit
""")


def _conditions(params: dict[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in _CONDITIONS if params.get(name) is not None)


_FOREIGN_KEYS = {
    "fk_lessons_user_id_users": ("user", "user_id"),
    "fk_lessons_subject_category_id_subject_categories": (
        "subject_category",
        "subject_category_id",
    ),
    "fk_lessons_assistant_profile_id_assistant_profiles": (
        "assistant_profile",
        "assistant_profile_id",
    ),
}


def lesson_from_row(row: asyncpg.Record) -> Lesson:
    return Lesson(
        id=row["id"],
        title=row["title"],
        user_id=row["user_id"],
        subject_category_id=row["subject_category_id"],
        assistant_profile_id=row["assistant_profile_id"],
        grade_level=row["grade_level"],
        week_of=row["week_of"],
        content_area=row["content_area"],
        lesson_data=row["lesson_data"],
        objectives=row["objectives"],
        materials=row["materials"],
        activities=row["activities"],
        assessment_criteria=row["assessment_criteria"],
        feedback=row["feedback"],
        status=LessonStatus(row["status"]),
        tags=row["tags"],
        related_lessons=row["related_lessons"],
        subject_category_name=row["subject_category_name"],
        assistant_profile_name=row["assistant_profile_name"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class LessonStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, lesson_id: int, *, replica_ok: bool = False) -> Lesson:
        """`replica_ok`: may read the replica (storage/replica.py); not to fill a cache."""
        row = await self._db.fetchrow(_GET, lesson_id, replica_ok=replica_ok)
        if row is None:
            raise NotFound("lesson", lesson_id)
        return lesson_from_row(row)

    async def list_lessons(
        self,
        f: LessonFilter,
        after_position: int | None,
        limit: int,
        visible_to: uuid.UUID | None = None,
    ) -> Page[Lesson]:
        params: dict[str, Any] = {
            "visible_to": visible_to,
            "user_id": f.user_id,
            "status": f.status.value if f.status else None,
            "week_of_start": f.week_of_start,
            "week_of_end": f.week_of_end,
            "grade_level": f.grade_level,
            "subject_category_id": f.subject_category_id,
            "subject_category_name": f.subject_category_name,
            "tags": f.tags or None,
            "lesson_data": f.lesson_data or None,
            "after_id": after_position,
            "limit": limit + 1,
        }
        statement = _list_sql(_conditions(params))
        rows = await self._db.fetch(statement.sql, *statement.args(params), replica_ok=True)
        items = [lesson_from_row(r) for r in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(items, [last.id] if last else None)

    async def search(
        self,
        query: str,
        user_id: uuid.UUID | None,
        status: LessonStatus | None,
        offset: int,
        limit: int,
        visible_to: uuid.UUID | None = None,
    ) -> list[LessonMatch]:
        """Up to `limit` matches, best first, after skipping `offset`."""
        params: dict[str, Any] = {
            "visible_to": visible_to,
            "query": query,
            "user_id": user_id,
            "status": status.value if status else None,
            "offset": offset,
            "limit": limit,
        }
        statement = _search_sql(_conditions(params))
        rows = await self._db.fetch(statement.sql, *statement.args(params), replica_ok=True)
        return [LessonMatch(lesson=lesson_from_row(r), rank=r["rank"]) for r in rows]

    async def upsert(self, lesson: Lesson) -> Lesson:
        """Insert a lesson without an id; replace the one with its id (NotFound if none)."""
        params: dict[str, Any] = {c: getattr(lesson, c) for c in _WRITABLE}
        params["status"] = lesson.status.value
        params["id"] = lesson.id
        statement = _INSERT if lesson.id is None else _UPDATE
        audit.note(user_id=lesson.user_id)
        try:
            async with self._db.connection() as conn:
                row = await conn.fetchrow(statement.sql, *statement.args(params))
                if row is not None:
                    audit.note(lesson_id=row["id"])
        except asyncpg.ForeignKeyViolationError as exc:
            resource, column = _FOREIGN_KEYS[exc.constraint_name]
            raise NotFound(resource, params[column]) from exc
        except asyncpg.CheckViolationError as exc:
            # domain.validation admits only rows these constraints accept.
            raise InvalidArgument.one(
                "lesson", f"rejected by the database ({exc.constraint_name})"
            ) from exc
        if row is None:
            raise NotFound("lesson", lesson.id)
        return lesson_from_row(row)

    async def delete(self, lesson_id: int) -> None:
        audit.note(lesson_id=lesson_id)
        async with self._db.connection() as conn:
            deleted = await conn.fetchval(_DELETE, lesson_id)
        if deleted is None:
            raise NotFound("lesson", lesson_id)

    async def ids_referencing(
        self, subject_category_id: int | None = None, assistant_profile_id: int | None = None
    ) -> list[int]:
        rows = await self._db.fetch(_REFERENCING, subject_category_id, assistant_profile_id)
        return [r["id"] for r in rows]
