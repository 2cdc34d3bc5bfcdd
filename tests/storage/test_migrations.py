"""The migrations build exactly the schema tables.py describes, and undo it."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from memory_service.storage import migrate, tables

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "target_metadata": tables.metadata,
            # Partitions are the retention job's, not the schema's.
            "include_name": lambda name, kind, _: (
                kind != "table" or not (name in tables.OPTIONAL_TABLES or tables.is_partition(name))
            ),
        },
    )
    return list(compare_metadata(context, tables.metadata))


async def _schema_diff(url: str) -> list[Any]:
    engine = create_async_engine(migrate.sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()


# compare_metadata does not look at CHECK constraints, index methods and
# operator classes, partial-index predicates or identity kinds (verified by
# hand: changing any of them after `upgrade` goes unnoticed). So the schema is
# also built a second time, straight from tables.py, in another PostgreSQL
# schema of the same database, and the two are compared in PostgreSQL's own
# normalised spelling (format_type, pg_get_expr, pg_get_constraintdef,
# pg_get_indexdef).
_CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
               a.attnotnull, a.attidentity, a.attgenerated, pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND a.attnum > 0
              AND NOT a.attisdropped
        ORDER BY 1, 2
    """,
    "constraints": """
        SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
        ORDER BY 1, 2
    """,
    "storage": """
        SELECT c.relname, c.reloptions
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
        ORDER BY 1
    """,
    "indexes": """
        SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid)
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = $1 AND t.relname = ANY($2::text[])
        ORDER BY 1, 2
    """,
}


# The functions tables.py's columns call (tables.FUNCTIONS), as PostgreSQL
# prints them back.
_FUNCTIONS_QUERY = """
    SELECT p.proname, pg_get_functiondef(p.oid)
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = $1 AND p.proname = ANY($2::text[])
    ORDER BY 1
"""


async def _catalog(conn: asyncpg.Connection, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    names = list(tables.metadata.tables)
    # Names outside the search path come back schema-qualified; drop that.
    qualified = f"{schema}."
    queries = {kind: (query, names) for kind, query in _CATALOG_QUERIES.items()}
    queries["functions"] = (_FUNCTIONS_QUERY, list(tables.FUNCTIONS))
    return {
        kind: [
            tuple(v.replace(qualified, "") if isinstance(v, str) else v for v in row)
            for row in await conn.fetch(query, schema, args)
        ]
        for kind, (query, args) in queries.items()
    }


async def _create_reference_schema(url: str, schema: str) -> None:
    engine = create_async_engine(migrate.sqlalchemy_url(url), poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
            # The functions first, in the new schema, so that its computed
            # columns call its own copies (printed unqualified, as public's).
            await connection.exec_driver_sql(f"SET LOCAL search_path = {schema}, public")
            for definition in tables.FUNCTIONS.values():
                await connection.exec_driver_sql(definition)
            translated = await connection.execution_options(schema_translate_map={None: schema})
            await translated.run_sync(tables.metadata.create_all)
    finally:
        await engine.dispose()


async def _insert_user(conn: asyncpg.Connection, email: str = "ada@example.org") -> Any:
    return await conn.fetchval(
        "INSERT INTO users (email, created_at, updated_at) VALUES ($1, $2, $2) RETURNING id",
        email,
        LONG_AGO,
    )


async def _insert_memory(conn: asyncpg.Connection, user_id: Any, **values: Any) -> Any:
    row = {"content": "likes fractions", "category": "preference", **values}
    params = ", ".join(f"${i}" for i in range(3, len(row) + 3))
    return await conn.fetchval(
        f"INSERT INTO user_memories (user_id, updated_at, {', '.join(row)}) "
        f"VALUES ($1, $2, {params}) RETURNING id",
        user_id,
        LONG_AGO,
        *row.values(),
    )


@pytest.fixture
async def db(scratch_database_url: str) -> str:
    """A scratch database migrated to head."""
    await migrate.upgrade(scratch_database_url)
    return scratch_database_url


async def test_head_matches_tables_metadata(db: str) -> None:
    assert await _schema_diff(db) == []


async def test_head_matches_tables_catalog(db: str) -> None:
    await _create_reference_schema(db, "reference")
    conn = await asyncpg.connect(db)
    try:
        migrated = await _catalog(conn, "public")
        reference = await _catalog(conn, "reference")
    finally:
        await conn.close()
    assert len(migrated["indexes"]) > len(tables.metadata.tables)  # the queries see something
    assert len(migrated["functions"]) == len(tables.FUNCTIONS)
    for kind in migrated:
        assert migrated[kind] == reference[kind], kind


async def test_every_trigger_exists(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT tgname, tgrelid::regclass::text AS table_name FROM pg_trigger "
            "WHERE NOT tgisinternal"
        )
    finally:
        await conn.close()
    found = {row["tgname"]: row["table_name"] for row in rows}
    assert found == tables.TRIGGERS


async def test_updated_at_trigger(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        user_id = await _insert_user(conn)
        await conn.execute("UPDATE users SET name = 'Ada' WHERE id = $1", user_id)
        assert await conn.fetchval("SELECT updated_at FROM users WHERE id = $1", user_id) > LONG_AGO

        memory_id = await _insert_memory(conn, user_id)
        await conn.execute(
            "UPDATE user_memories SET last_accessed = now() WHERE id = $1", memory_id
        )
        updated_at = "SELECT updated_at FROM user_memories WHERE id = $1"
        assert await conn.fetchval(updated_at, memory_id) == LONG_AGO
        await conn.execute(
            "UPDATE user_memories SET content = 'likes decimals', version = version + 1 "
            "WHERE id = $1",
            memory_id,
        )
        assert await conn.fetchval(updated_at, memory_id) > LONG_AGO
    finally:
        await conn.close()


async def test_downgrade_to_base_and_back(db: str) -> None:
    await migrate.downgrade(db)
    conn = await asyncpg.connect(db)
    try:
        relations = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        )
        functions = await conn.fetch(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        )
        assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 0
    finally:
        await conn.close()
    # alembic_version and its primary-key index; no types, sequences or indexes left over.
    assert {row["relname"] for row in relations} == {"alembic_version", "alembic_version_pkc"}
    assert functions == []

    await migrate.upgrade(db)
    assert await _schema_diff(db) == []


async def _users_seen_for_all(url: str) -> int:
    """How many users `url`'s role sees when it acts for all users ('*')."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('faraday.acting_user', '*', true)")
            return int(await conn.fetchval("SELECT count(*) FROM users"))
    finally:
        await conn.close()


async def test_0009_gives_all_users_to_the_platform_role_alone_and_back(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        await _insert_user(conn)
    finally:
        await conn.close()
    app, platform = migrate.app_role_url(db), migrate.platform_role_url(db)
    assert (await _users_seen_for_all(app), await _users_seen_for_all(platform)) == (0, 1)

    await migrate.downgrade(db, "0008")
    assert await _users_seen_for_all(app) == 1  # as before 0009
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # its grants are gone, not the role
        await _users_seen_for_all(platform)

    await migrate.upgrade(db)
    assert (await _users_seen_for_all(app), await _users_seen_for_all(platform)) == (0, 1)


async def _version(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        version: str | None = await conn.fetchval("SELECT version_num FROM alembic_version")
        return version
    finally:
        await conn.close()


async def test_concurrent_upgrades_across_processes(scratch_database_url: str) -> None:
    # Several service instances may start at once: env.py's advisory lock
    # makes the later ones wait, then find the schema already at head.
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ALEMBIC_INI),
            "-x",
            f"url={scratch_database_url}",
            "upgrade",
            "head",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    for process in processes:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, output.decode()
    assert await _version(scratch_database_url) == _head()


async def test_concurrent_upgrades_in_one_process(scratch_database_url: str) -> None:
    # Alembic's proxies are process-global; migrate.py must serialise runs.
    upgrades = (migrate.upgrade(scratch_database_url) for _ in range(3))
    await asyncio.wait_for(asyncio.gather(*upgrades), timeout=60)
    assert await _version(scratch_database_url) == _head()


async def test_constraints(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await _insert_user(conn, "not-an-email")
        user_id = await _insert_user(conn)
        with pytest.raises(asyncpg.UniqueViolationError):
            await _insert_user(conn, "ADA@example.org")

        with pytest.raises(asyncpg.CheckViolationError):
            await _insert_memory(conn, user_id, importance=1.5)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO lessons (title, user_id, status) VALUES ('Fractions', $1, 'bogus')",
                user_id,
            )

        memory_id = await _insert_memory(conn, user_id)
        await conn.execute(
            "INSERT INTO memory_interactions (memory_id, user_id, interaction_type) "
            "VALUES ($1, $2, 'recall')",
            memory_id,
            user_id,
        )
        # An interaction is about its own user's memory (migration 0008).
        other_id = await _insert_user(conn, "grace@example.org")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO memory_interactions (memory_id, user_id, interaction_type) "
                "VALUES ($1, $2, 'recall')",
                memory_id,
                other_id,
            )
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        assert await conn.fetchval("SELECT count(*) FROM user_memories") == 0
        assert await conn.fetchval("SELECT count(*) FROM memory_interactions") == 0
    finally:
        await conn.close()


def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(
        migrate.alembic_config("postgresql://unused")
    ).get_current_head()
    assert head is not None
    return head


async def test_0007_repairs_out_of_range_times_then_refuses_them(scratch_database_url: str) -> None:
    """Rows asyncpg wrote as +/-infinity before 0007 read back; no new ones can be written."""
    url = scratch_database_url
    await migrate.upgrade(url, "0006")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT set_config('faraday.acting_user', '*', false)")
        user_id = await _insert_user(conn)
        never = await _insert_memory(
            conn, user_id, expires_at=dt.datetime.max.replace(tzinfo=dt.UTC)
        )
        past = await _insert_memory(
            conn, user_id, expires_at=dt.datetime.min.replace(tzinfo=dt.UTC)
        )
        await conn.execute(
            "INSERT INTO lessons (title, user_id, week_of) VALUES ('Fractions', $1, 'infinity')",
            user_id,
        )
        # What the bug stored: asyncpg turns datetime.max into infinity.
        assert (
            await conn.fetchval("SELECT expires_at::text FROM user_memories WHERE id = $1", never)
            == "infinity"
        )
        await conn.close()

        await migrate.upgrade(url)

        conn = await asyncpg.connect(url)
        await conn.execute("SELECT set_config('faraday.acting_user', '*', false)")
        expiry = dict(await conn.fetch("SELECT id, expires_at FROM user_memories"))
        assert expiry == {never: None, past: dt.datetime(1970, 1, 1, tzinfo=dt.UTC)}
        assert await conn.fetchval("SELECT week_of FROM lessons") is None
        for value in (
            "infinity",
            "-infinity",
            "9000-01-01 00:00:00+00",
            "1969-12-31 23:59:59.999999+00",
        ):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "UPDATE user_memories SET expires_at = $1::text::timestamptz WHERE id = $2",
                    value,
                    never,
                )
        for value in ("infinity", "9000-01-01", "1969-12-31"):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("UPDATE lessons SET week_of = $1::text::date", value)
        # The bounds themselves are stored and read back to the microsecond.
        for moment in (
            dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
            dt.datetime(8999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        ):
            await conn.execute(
                "UPDATE user_memories SET expires_at = $1 WHERE id = $2", moment, never
            )
            assert (
                await conn.fetchval("SELECT expires_at FROM user_memories WHERE id = $1", never)
                == moment
            )
    finally:
        await conn.close()


async def test_0016_downgrade_refuses_while_users_are_encrypted(db: str) -> None:
    """Dropping encrypted_sensitive_data would lose the fields only the service can decrypt."""
    conn = await asyncpg.connect(db)
    try:
        user = await _insert_user(conn)
        await conn.execute(
            "UPDATE users SET encrypted_sensitive_data = '\\x00'::bytea WHERE id = $1", user
        )
        # A sealed row holds no plaintext copy of the sealed fields.
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE users SET name = 'Ada' WHERE id = $1", user)
    finally:
        await conn.close()
    with pytest.raises(Exception, match="decrypt them before downgrading"):
        await migrate.downgrade(db, "0015")
    conn = await asyncpg.connect(db)
    try:
        await conn.execute("UPDATE users SET encrypted_sensitive_data = NULL")
    finally:
        await conn.close()
    await migrate.downgrade(db, "0015")
    await migrate.upgrade(db)
    assert await _schema_diff(db) == []
