"""The dedup content key (migration 0014) and its lookup's plan as the service role."""

from __future__ import annotations

import asyncpg
import pytest

from memory_service.storage import migrate
from memory_service.storage.dedup import exact_sql
from memory_service.storage.memories import MEMORY_COLUMNS

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def db(scratch_database_url: str) -> str:
    await migrate.upgrade(scratch_database_url)
    return scratch_database_url


async def test_content_key_normalizes_case_space_and_compatibility_forms(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        key = "SELECT faraday_content_key($1)"
        base = await conn.fetchval(key, "likes fractions 2")
        for same in (
            "Likes Fractions 2",
            "  likes\t\nfractions   2 ",
            "\uff2cikes fractions \uff12",
        ):
            assert await conn.fetchval(key, same) == base, same
        for other in ("likes fractions 3", "likes fraction 2", "likesfractions 2"):
            assert await conn.fetchval(key, other) != base, other
        assert len(base) == 32
    finally:
        await conn.close()


async def test_the_exact_lookup_is_an_index_scan_for_the_service_role(db: str) -> None:
    """Under row-level security only leakproof operators are index conditions:
    uuid and bytea equality are, so the lookup uses (user_id, content_key)."""
    conn = await asyncpg.connect(db)
    try:
        user = await conn.fetchval("INSERT INTO users (email) VALUES ('a@b.org') RETURNING id")
        await conn.execute(
            "INSERT INTO users (email) SELECT 'u' || g || '@b.org' FROM generate_series(1, 30) g"
        )
        await conn.execute(
            "INSERT INTO user_memories (user_id, content, category)"
            " SELECT id, 'fact ' || g, 'c' FROM users, generate_series(1, 300) g"
        )
        await conn.execute("ANALYZE user_memories")
    finally:
        await conn.close()
    statement = exact_sql(MEMORY_COLUMNS)
    app = await asyncpg.connect(migrate.app_role_url(db))
    try:
        async with app.transaction():
            await app.execute("SELECT set_config('faraday.acting_user', $1, true)", str(user))
            params = {"user_id": user, "assistant_profile_id": None, "content": "Fact 7"}
            plan = await app.fetch("EXPLAIN " + statement.sql, *statement.args(params))
            found = await app.fetchrow(statement.sql, *statement.args(params))
    finally:
        await app.close()
    text = "\n".join(r[0] for r in plan)
    assert "ix_user_memories_user_id_content_key" in text, text
    assert "Index Cond" in text and "content_key" in text.split("Index Cond")[1].split("\n")[0]
    assert found is not None and found["content"] == "fact 7"
