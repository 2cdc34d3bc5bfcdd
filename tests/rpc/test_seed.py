"""`seed-demo`: the documentation's mock data, loaded through the service layer, idempotent."""

from __future__ import annotations

import asyncpg
import pytest
from faraday.memory.v1 import lesson_service_pb2, memory_service_pb2

from memory_service.seed import LESSONS, MEMORIES, USERS, seed_demo
from memory_service.storage import migrate

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _count(database_url: str, table: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def test_seed_demo_loads_every_kind_of_record_once(
    database_url, app_url, memory_stub, lesson_stub
) -> None:
    first = await seed_demo(app_url, migrate.platform_role_url(database_url))
    assert first["memories"] == len(MEMORIES) and first["lessons"] == len(LESSONS)
    counts = {
        t: await _count(database_url, t)
        for t in (
            "users",
            "user_preferences",
            "subject_categories",
            "assistant_profiles",
            "assistant_capabilities",
            "lessons",
            "user_memories",
            "memory_interactions",
        )
    }
    assert all(n > 0 for n in counts.values()), counts
    assert counts["memory_interactions"] == first["interactions"]
    second = await seed_demo(app_url, migrate.platform_role_url(database_url))
    assert second["memories"] == second["lessons"] == 0
    assert await _count(database_url, "user_memories") == len(MEMORIES)
    # The demo data answers the service's own calls.
    recalled = await memory_stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=str(USERS[0][0]), query="fractions")
    )
    assert recalled.memories
    found = await lesson_stub.SearchLessons(
        lesson_service_pb2.SearchLessonsRequest(query="fractions")
    )
    assert found.matches[0].lesson.subject_category_name == "Mathematics"
