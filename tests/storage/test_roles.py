"""The roles the service connects as (migrations 0002 and 0009)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from memory_service.storage import migrate, tables

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _add_user(conn: asyncpg.Connection, n: int) -> uuid.UUID:
    """A user with a row in every table under row-level security (as the owner)."""
    user: uuid.UUID = await conn.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", f"u{n}@school.example.org"
    )
    await conn.execute("INSERT INTO user_preferences (user_id) VALUES ($1)", user)
    await conn.execute("INSERT INTO lessons (title, user_id) VALUES ('draft plan', $1)", user)
    memory = await conn.fetchval(
        "INSERT INTO user_memories (user_id, content, category) VALUES ($1, 'm', 'c') RETURNING id",
        user,
    )
    await conn.execute(
        "INSERT INTO memory_interactions (memory_id, user_id, interaction_type)"
        " VALUES ($1, $2, 'store')",
        memory,
        user,
    )
    await conn.execute(
        "INSERT INTO idempotency_keys (caller, request_id, method, request_hash, user_id,"
        " memory_id) VALUES ('backend', $1, 'StoreMemory', 'h', $2, $3)",
        f"r{n}",
        user,
        memory,
    )
    return user


@pytest.fixture
async def world(scratch_database_url: str) -> AsyncIterator[tuple[str, list[uuid.UUID]]]:
    """The owner's URL of a migrated database holding two users' rows, and the users."""
    await migrate.upgrade(scratch_database_url)
    conn = await asyncpg.connect(scratch_database_url)
    try:
        users = [await _add_user(conn, n) for n in range(2)]
    finally:
        await conn.close()
    yield scratch_database_url, users


async def test_the_platform_role_has_exactly_the_service_roles_privileges(
    world: tuple[str, list[uuid.UUID]],
) -> None:
    owner_url, _ = world
    conn = await asyncpg.connect(owner_url)
    try:
        granted = {
            role: await conn.fetch(
                "SELECT c.relname, c.relkind::text, a.privilege_type FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace,"
                " aclexplode(c.relacl) a WHERE n.nspname = 'public'"
                " AND a.grantee = $1::regrole ORDER BY 1, 2, 3",
                role,
            )
            for role in (tables.APP_ROLE, tables.PLATFORM_ROLE)
        }
        schema = [
            await conn.fetchval("SELECT has_schema_privilege($1, 'public', 'USAGE')", role)
            for role in (tables.APP_ROLE, tables.PLATFORM_ROLE)
        ]
    finally:
        await conn.close()
    app, platform = ([tuple(r) for r in rows] for rows in granted.values())
    assert ("audit_log", "r", "UPDATE") not in app and ("user_memories", "r", "DELETE") in app
    assert platform == app
    assert schema == [True, True]
