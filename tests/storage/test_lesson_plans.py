"""The lesson statements' plans as the service's roles run them (migration 0019).

Under FORCE ROW LEVEL SECURITY an index the owner's EXPLAIN shows can be one
faraday_platform and faraday_app may not use (docs/schema.md): these plans
are taken as those roles, with the statements storage/lessons.py runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from memory_service.storage import lessons, migrate
from tests.conftest import create_scratch_database, drop_scratch_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

LESSONS = 3_000
_TOPICS = ("fractions", "volcano", "poetry", "magnets", "algebra", "rivers")


@pytest.fixture(scope="module")
async def world(pg_admin_url: str) -> AsyncIterator[tuple[str, list[uuid.UUID]]]:
    owner_url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(owner_url)
        conn = await asyncpg.connect(owner_url)
        try:
            users = [
                await conn.fetchval(
                    "INSERT INTO users (email) VALUES ($1) RETURNING id", f"t{n}@school.example.org"
                )
                for n in range(4)
            ]
            await conn.execute(
                "INSERT INTO subject_categories (name) SELECT 'Subject ' || k"
                " FROM generate_series(1, 100) k"
            )
            # users[3] owns 1% of the lessons; a grade 2%, a subject 1%.
            await conn.execute(
                """
                INSERT INTO lessons (title, user_id, grade_level, subject_category_id,
                                     lesson_data, status)
                SELECT 'Lesson ' || n || ' on ' || ($2::text[])[1 + n % 6],
                       ($1::uuid[])[CASE WHEN n % 100 = 0 THEN 4 ELSE 1 + n % 3 END],
                       (n % 50)::text,
                       (SELECT id FROM subject_categories WHERE name = 'Subject ' || 1 + n % 100),
                       jsonb_build_object('text', 'Students study ' || ($2::text[])[1 + n % 5]
                                                  || ' with ' || ($2::text[])[1 + n % 4]),
                       (ARRAY['draft', 'published', 'archived'])[1 + n % 3]
                FROM generate_series(1, $3) n
                """,
                users,
                list(_TOPICS),
                LESSONS,
            )
            await conn.execute("VACUUM ANALYZE lessons, lesson_terms")
        finally:
            await conn.close()
        yield owner_url, users
    finally:
        await drop_scratch_database(pg_admin_url, owner_url)


async def _plan(url: str, acting: str, statement: Any, params: dict[str, Any]) -> str:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            # Few enough rows that a scan and a sort could be cheaper: the
            # question is whether the role may use the index at all.
            await conn.execute(
                "SELECT set_config('faraday.acting_user', $1, true),"
                " set_config('enable_seqscan', 'off', true),"
                " set_config('enable_bitmapscan', 'off', true)",
                acting,
            )
            rows = await conn.fetch(f"EXPLAIN {statement.sql}", *statement.args(params))
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


def _params(**given: Any) -> dict[str, Any]:
    return {name: None for name in lessons._CONDITIONS} | given


@pytest.mark.parametrize("role", ["platform", "app"])
@pytest.mark.parametrize("query", ["fractions", "volcano poetry", "rivers or magnets"])
async def test_search_finds_candidates_through_the_term_index(
    world: tuple[str, list[uuid.UUID]], role: str, query: str
) -> None:
    owner_url, users = world
    if role == "platform":
        url, acting, visible_to = migrate.platform_role_url(owner_url), "*", None
    else:
        url, acting, visible_to = migrate.app_role_url(owner_url), str(users[0]), users[0]
    params = _params(query=query, offset=0, limit=11, visible_to=visible_to)
    plan = await _plan(url, acting, lessons._search_sql(lessons._conditions(params)), params)
    assert "Index Only Scan Backward using pk_lesson_terms on lesson_terms" in plan, plan
    assert "Seq Scan on lessons" not in plan, plan
    assert "ix_lessons_search_vector" not in plan, plan  # never usable by these roles


@pytest.mark.parametrize(
    ("given", "index"),
    [
        ("user_id", "ix_lessons_user_id_id"),
        ("grade_level", "ix_lessons_grade_level"),
        ("subject_category_id", "ix_lessons_subject_category_id"),
        ("subject_category_name", "ix_lessons_subject_category_id"),
    ],
)
async def test_list_filters_read_their_page_in_order_from_an_index(
    world: tuple[str, list[uuid.UUID]], given: str, index: str
) -> None:
    # Selective filters: the page comes from the (column, id) index in id
    # order, 21 rows read, no sort of every match (a single-column index
    # returns ties in heap order).
    owner_url, users = world
    conn = await asyncpg.connect(owner_url)
    try:
        subject = await conn.fetchval("SELECT id FROM subject_categories WHERE name = 'Subject 7'")
    finally:
        await conn.close()
    value = {
        "user_id": users[3],
        "grade_level": "7",
        "subject_category_id": subject,
        "subject_category_name": "Subject 7",
    }[given]
    params = _params(limit=21, **{given: value})
    plan = await _plan(
        migrate.platform_role_url(owner_url),
        "*",
        lessons._list_sql(lessons._conditions(params)),
        params,
    )
    assert f"Index Scan Backward using {index} on lessons" in plan, plan
    assert "Sort" not in plan, plan
