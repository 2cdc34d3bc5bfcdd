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
# to an index rather than `(:x IS NULL OR ...)` that a generic plan cannot
# use an index for. Under row-level security only the leakproof ones (the
# equalities and ranges) can be index conditions: the equalities have a
# (column, id) index each, which gives ListLessons' page in its order
# (migration 0019); tags and lesson_data `@>` are checked row by row.
_CONDITIONS = {
    "user_id": "l.user_id = :user_id",
    "status": "l.status = :status",
    "week_of_start": "l.week_of >= :week_of_start",
    "week_of_end": "l.week_of <= :week_of_end",
    "grade_level": "l.grade_level = :grade_level",
    "subject_category_id": "l.subject_category_id = :subject_category_id",
    # Names are unique: one id, an equality the (subject_category_id, id)
    # index serves in id order, where a join on the name would sort.
    "subject_category_name": (
        "l.subject_category_id ="
        " (SELECT id FROM subject_categories WHERE name = :subject_category_name)"
    ),
    # A JSON array contains another when it has all of its elements.
    "tags": "l.tags @> :tags::jsonb",
    "lesson_data": "l.lesson_data @> :lesson_data::jsonb",
    "after_id": "l.id < :after_id::bigint",
    # A user-scoped caller: its own lessons and published ones (row-level
    # security says the same; this is the first wall).
    "visible_to": "(l.user_id = :visible_to::uuid OR l.status = 'published')",
}

# SearchLessons matches and ranks at most this many lessons (the cap; a
# setting, FARADAY_SEARCH_CANDIDATES_PER_WORD, of which this is the default)
# per query word it draws candidates from (lesson_terms; migration 0019),
# each word's best by the rank a query of that word alone gives them, among
# the lessons the caller may see and the filters admit. A query without
# `or` needs all its words, so its candidates are its rarest word's lessons:
# its ranking is exact whenever that word is in at most this many of them.
# Which word is rarest: lesson_term_frequencies (migration 0020) counts the
# words in more lessons than the cap, as of the lesson term job's last run;
# each other word's postings are counted up to the cap plus one. A query
# with `or` draws from every word. A one-word query's rank is the word's
# own, so it reads only the page, and it ends after the cap's matches.
# bench/search_quality.py measures what smaller caps cost in ranking.
SEARCH_CANDIDATES_PER_WORD = 500

# The postings' own copies of the lesson columns these filters test, so the
# cap counts only lessons the search may return.
_CANDIDATE_CONDITIONS = {
    "user_id": "p.user_id = :user_id",
    "status": "p.status = :status",
    "visible_to": "(p.user_id = :visible_to::uuid OR p.status = 'published')",
}


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
def _search_sql(present: tuple[str, ...], cap: int = SEARCH_CANDIDATES_PER_WORD) -> NamedSQL:
    # `@@` is not leakproof, so under row-level security no full-text index
    # can find the matches: the candidates come from lesson_terms, by
    # equality on a positive query lexeme (negated ones find nothing), best
    # impact first, an index-only scan the policy is checked in. To find the
    # rarest word of a query without `or`, a word lesson_term_frequencies
    # counts is known to be past the cap and ordered by that count, and the
    # others (in at most `cap` lessons at the last count) are counted up to
    # the cap, as the caller sees them. Only the candidates' lessons are
    # read, matched and ranked, and only the page's columns are fetched.
    # The candidates' lessons are read by one index scan over their ids as
    # an array (`= ANY`, which also drops an id two words both drew), not
    # by one primary-key lookup each: the scan sorts the ids and, from
    # PostgreSQL 17 on, reads each index page once for all its ids
    # (bench/README.md, "SearchLessons' lesson reads").
    postings = "".join(f" AND {_CANDIDATE_CONDITIONS[name]}" for name in present)
    where = "".join(f" AND {_CONDITIONS[name]}" for name in present)
    # Normalization 32 maps the rank r to r / (r + 1): 0..1, as documented.
    return NamedSQL.compile(f"""
WITH q AS (
    SELECT q, numnode(q) = 1 AS one_word, position(' | ' IN querytree(q)) > 0 AS any_word
    FROM websearch_to_tsquery('english', :query) q
),
words AS (
    SELECT w.lexeme, f.lessons, CASE
        WHEN q.one_word OR q.any_word THEN 0
        WHEN f.lessons IS NOT NULL THEN {cap + 1}
        ELSE (
            SELECT count(*) FROM (
                SELECT FROM lesson_terms p WHERE p.lexeme = w.lexeme{postings} LIMIT {cap + 1}
            ) s
        )
    END AS df
    FROM q CROSS JOIN unnest(faraday_tsquery_lexemes(q.q)) w (lexeme)
    LEFT JOIN lesson_term_frequencies f ON f.lexeme = w.lexeme
),
drivers AS (
    SELECT lexeme FROM words WHERE (SELECT any_word FROM q)
    UNION ALL
    (SELECT lexeme FROM words WHERE NOT (SELECT any_word FROM q)
     ORDER BY df, lessons NULLS FIRST, lexeme LIMIT 1)
),
candidates AS (
    SELECT c.lesson_id
    FROM drivers d CROSS JOIN LATERAL (
        SELECT p.lesson_id FROM lesson_terms p
        WHERE p.lexeme = d.lexeme{postings}
        ORDER BY p.impact DESC, p.lesson_id DESC
        LIMIT (
            SELECT CASE WHEN one_word THEN least(:offset::bigint + :limit::bigint, {cap})
                        ELSE {cap} END
            FROM q
        )
    ) c
),
ranked AS (
    SELECT l.id, ts_rank_cd(l.search_vector, q.q, 32) AS rank
    FROM lessons l CROSS JOIN q
    WHERE l.id = ANY (ARRAY(SELECT lesson_id FROM candidates))
      AND l.search_vector @@ q.q{where}
    ORDER BY rank DESC, l.id DESC
    OFFSET :offset
    LIMIT :limit
)
SELECT {LESSON_COLUMNS}, r.rank
FROM ranked r JOIN lessons l ON l.id = r.id {LESSON_NAMES_JOIN}
ORDER BY r.rank DESC, l.id DESC
""")


# The lesson term job reads every posting: 7.9 s for the 34.5M postings of
# 1,000,000 bench lessons (bench/search_quality.py), so ten minutes is room
# for ten times that on a slower server.
COUNT_TERMS_TIMEOUT_SECONDS = 600

# The first key of the advisory lock a shared periodic job's run holds
# ("FJOB"); the second is the hashed job name (job_runs, migration 0021).
JOB_LOCK_NAMESPACE = 0x464A4F42
TERM_JOB = "lesson term counts"

# A run of a job several service processes share: it goes ahead (one row)
# only if no other run holds the job's lock and the last run started at
# least $2 seconds ago; it then holds the lock, and the row stays locked, to
# the end of its transaction (a run that fails rolls its start back).
_CLAIM_JOB = f"""
INSERT INTO job_runs AS r (job, started_at)
SELECT $1::text, now() WHERE pg_try_advisory_xact_lock({JOB_LOCK_NAMESPACE}, hashtext($1::text))
ON CONFLICT (job) DO UPDATE SET started_at = excluded.started_at
WHERE r.started_at <= excluded.started_at - make_interval(secs => $2::float8)
RETURNING 1
"""

# Every lexeme in more than `cap` lessons (all of them: the count breaks ties
# between common words, it does not decide what anyone sees) with its count,
# and no other: the rows that changed, appeared or went.
_COUNT_TERMS = """
WITH counts AS (
    SELECT lexeme, count(*)::int AS lessons FROM lesson_terms
    GROUP BY lexeme HAVING count(*) > $1::int
),
gone AS (
    DELETE FROM lesson_term_frequencies f
    WHERE NOT EXISTS (SELECT FROM counts c WHERE c.lexeme = f.lexeme)
    RETURNING 1
),
changed AS (
    INSERT INTO lesson_term_frequencies AS f (lexeme, lessons)
    SELECT lexeme, lessons FROM counts ORDER BY lexeme  -- two recounts lock in one order
    ON CONFLICT (lexeme) DO UPDATE SET lessons = excluded.lessons
    WHERE f.lessons <> excluded.lessons
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM changed)
"""


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
    def __init__(self, db: Database, candidates_per_word: int = SEARCH_CANDIDATES_PER_WORD) -> None:
        self._db = db
        self._cap = candidates_per_word

    async def get(self, lesson_id: int, *, replica_ok: bool = False) -> Lesson:
        """`replica_ok`: may read the replica (storage/replica.py); not to fill a cache.
        Either way a read, ended off the caller's path (Database.connection)."""
        row = await self._db.fetchrow(_GET, lesson_id, replica_ok=replica_ok, read_only=True)
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
        statement = _search_sql(_conditions(params), self._cap)
        # Its plan is the candidates' whatever the query (no full-text index
        # is usable under row-level security), and planning it costs ~1 ms.
        rows = await self._db.fetch(
            statement.sql, *statement.args(params), generic_plan=True, replica_ok=True
        )
        return [LessonMatch(lesson=lesson_from_row(r), rank=r["rank"]) for r in rows]

    async def count_terms(self, unless_started_within_seconds: float = 0.0) -> int | None:
        """Recount lesson_term_frequencies (as ALL_USERS); how many rows changed.

        None, and nothing read, if another run (of any process) is under way
        or started less than `unless_started_within_seconds` ago (job_runs).
        It reads every posting, so it has a timeout of its own rather than
        the service's statement timeout.
        """
        async with self._db.connection() as conn:
            await conn.execute(
                "SELECT set_config('statement_timeout', $1, true)",
                f"{COUNT_TERMS_TIMEOUT_SECONDS}s",
            )
            if await conn.fetchval(_CLAIM_JOB, TERM_JOB, unless_started_within_seconds) is None:
                return None
            changed: int = await conn.fetchval(
                _COUNT_TERMS, self._cap, timeout=COUNT_TERMS_TIMEOUT_SECONDS
            )
        return changed

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
