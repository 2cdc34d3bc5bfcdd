"""Acting for all users belongs to faraday_platform alone (migration 0009).

Plain asyncpg connections as each role, setting faraday.acting_user as the
service does, with no WHERE clause to help: what row-level security alone
lets each role see and change.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

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
    # A change of content keeps a revision (migration 0013's trigger).
    await conn.execute("UPDATE user_memories SET content = 'm2' WHERE id = $1", memory)
    await conn.execute(
        "INSERT INTO memory_interactions (memory_id, user_id, interaction_type)"
        " VALUES ($1, $2, 'store')",
        memory,
        user,
    )
    await conn.execute(
        "INSERT INTO memory_import_ids (user_id, import_id, memory_id) VALUES ($1, 'i', $2)",
        user,
        memory,
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


async def _owners(url: str, acting: str) -> dict[str, set[uuid.UUID]]:
    """Per table under row-level security, whose rows `url`'s role sees as `acting`."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('faraday.acting_user', $1, true)", acting)
            return {
                table: {r[0] for r in await conn.fetch(f"SELECT {owner} FROM {table}")}
                for table, owner in tables.RLS_TABLES.items()
            }
    finally:
        await conn.close()


def _in_every_table(users: list[uuid.UUID]) -> dict[str, set[uuid.UUID]]:
    return {table: set(users) for table in tables.RLS_TABLES}


async def test_only_the_platform_role_sees_every_user(
    world: tuple[str, list[uuid.UUID]],
) -> None:
    owner_url, users = world
    app, platform = migrate.app_role_url(owner_url), migrate.platform_role_url(owner_url)
    assert await _owners(app, "*") == _in_every_table([])  # as for '': nobody's rows
    assert await _owners(app, "") == _in_every_table([])
    assert await _owners(platform, "*") == _in_every_table(users)
    # A user id binds the platform role as it binds the service role.
    assert await _owners(platform, str(users[0])) == _in_every_table(users[:1])
    assert await _owners(app, str(users[0])) == _in_every_table(users[:1])


async def test_the_service_role_cannot_change_any_row_as_all_users(
    world: tuple[str, list[uuid.UUID]],
) -> None:
    owner_url, users = world
    conn = await asyncpg.connect(migrate.app_role_url(owner_url))
    try:
        changed: dict[str, Any] = {}
        for table, owner in tables.RLS_TABLES.items():
            async with conn.transaction():
                await conn.execute("SELECT set_config('faraday.acting_user', '*', true)")
                # Not granted on these: append and delete only.
                if table not in (
                    "idempotency_keys",
                    "memory_revisions",
                    "memory_import_ids",
                    "lesson_terms",
                ):
                    changed[f"update {table}"] = await conn.fetch(
                        f"UPDATE {table} SET {owner} = {owner} RETURNING {owner}"
                    )
                changed[f"delete {table}"] = await conn.fetch(
                    f"DELETE FROM {table} RETURNING {owner}"
                )
        for insert, args in (
            ("INSERT INTO users (email) VALUES ('new@school.example.org')", ()),
            ("INSERT INTO user_memories (user_id, content, category) VALUES ($1, 'm', 'c')", users),
            ("INSERT INTO lessons (title, user_id) VALUES ('t', $1)", users),
        ):
            async with conn.transaction():
                await conn.execute("SELECT set_config('faraday.acting_user', '*', true)")
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(insert, *args[:1])
    finally:
        await conn.close()
    assert all(rows == [] for rows in changed.values()), changed
    assert await _owners(owner_url, "") == _in_every_table(users)  # all still there


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
    assert ("memory_revisions", "r", "UPDATE") not in app  # history is not rewritten
    assert platform == app
    assert schema == [True, True]


async def test_revisions_are_kept_as_the_acting_user_and_never_rewritten(
    world: tuple[str, list[uuid.UUID]],
) -> None:
    """Migration 0013's trigger writes as the service role, under its policies, with the actor."""
    owner_url, users = world
    roles = {
        "app": migrate.app_role_url(owner_url),
        "platform": migrate.platform_role_url(owner_url),
    }
    for name, url in roles.items():
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('faraday.acting_user', $1, true),"
                    " set_config('faraday.actor', $2, true)",
                    str(users[0]),
                    f"service:{name}",
                )
                # No WHERE clause: only user 0's memory is visible, so only it changes.
                await conn.execute("UPDATE user_memories SET importance = importance / 2")
                seen = await conn.fetch("SELECT user_id FROM memory_revisions")
                assert {r["user_id"] for r in seen} == {users[0]}
            for acting in ("*", str(users[0])):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('faraday.acting_user', $1, true)", acting)
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute("UPDATE memory_revisions SET content = 'forged'")
        finally:
            await conn.close()
    conn = await asyncpg.connect(owner_url)
    try:
        rows = await conn.fetch(
            "SELECT user_id, version, content, importance, changed_by FROM memory_revisions"
            " ORDER BY id"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        # `world`'s content changes, by the owner with no actor set.
        (users[0], 1, "m", 0.5, "database"),
        (users[1], 1, "m", 0.5, "database"),
        # The halvings, each keeping the importance it replaced.
        (users[0], 1, "m2", 0.5, "service:app"),
        (users[0], 1, "m2", 0.25, "service:platform"),
    ]
