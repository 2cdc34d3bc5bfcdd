"""The schema can be sharded by user: every key of a per-user table holds user_id.

Citus (docs/scaling.md, "Distributing by user with Citus") checks a unique
key only inside one shard, and a foreign key between distributed tables only
between co-located shards, so each must include the distribution column.
Citus is not installable here; the catalog of the migrated schema is checked
against the plan in tables.py instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import pytest

from memory_service.storage import migrate, tables

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCALING_DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"

_TABLES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND NOT c.relispartition AND c.relname <> 'alembic_version'
"""

# Every unique index (primary keys and UNIQUE constraints included) with its
# key columns (not INCLUDE columns; NULL for an expression).
_UNIQUE_KEYS = """
SELECT t.relname AS table_name, i.relname AS index_name,
       array(SELECT a.attname FROM unnest(x.indkey[0:x.indnkeyatts - 1]) AS k(attnum)
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
             ) AS columns
FROM pg_index x
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_class i ON i.oid = x.indexrelid
WHERE t.relnamespace = 'public'::regnamespace AND x.indisunique AND NOT t.relispartition
"""

# Every foreign key, its columns and the referenced table's, pairwise.
_FOREIGN_KEYS = """
SELECT t.relname AS table_name, k.conname, r.relname AS referenced,
       array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY AS c(attnum, n)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = c.attnum
             ORDER BY c.n) AS columns,
       array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY AS c(attnum, n)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = c.attnum
             ORDER BY c.n) AS referenced_columns
FROM pg_constraint k
JOIN pg_class t ON t.oid = k.conrelid
JOIN pg_class r ON r.oid = k.confrelid
WHERE k.contype = 'f' AND t.relnamespace = 'public'::regnamespace AND NOT t.relispartition
"""


async def _violations(url: str) -> list[str]:
    """What keeps the schema at `url` from being distributed as tables.py plans."""
    distributed = set(tables.DISTRIBUTED_TABLES)
    conn = await asyncpg.connect(url)
    try:
        present = {r["relname"] for r in await conn.fetch(_TABLES)}
        unique_keys = await conn.fetch(_UNIQUE_KEYS)
        foreign_keys = await conn.fetch(_FOREIGN_KEYS)
        primary_keys = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
                " WHERE k.contype = 'p' AND c.relnamespace = 'public'::regnamespace"
            )
        }
    finally:
        await conn.close()
    found = []
    for table in sorted((distributed & present) - primary_keys):
        # Citus moves shards by logical replication, which needs a replica identity.
        found.append(f"{table}: no primary key")
    for key in unique_keys:
        table = key["table_name"]
        if table in distributed and "user_id" not in key["columns"]:
            found.append(f"{table}: unique {key['index_name']} {key['columns']} lacks user_id")
    for fk in foreign_keys:
        table, referenced = fk["table_name"], fk["referenced"]
        pairs = list(zip(fk["columns"], fk["referenced_columns"], strict=True))
        if table in tables.REFERENCE_TABLES and referenced in distributed:
            found.append(f"{table}: reference table with {fk['conname']} to a distributed one")
        elif table in distributed and referenced in distributed:
            owner_column = tables.RLS_TABLES.get(referenced, "user_id")
            if ("user_id", owner_column) not in pairs:
                found.append(f"{table}: {fk['conname']} {pairs} does not pair user_id")
        elif referenced in tables.LOCAL_TABLES:
            found.append(f"{table}: {fk['conname']} refers to a coordinator-only table")
    return found


@pytest.fixture
async def db(scratch_database_url: str) -> str:
    await migrate.upgrade(scratch_database_url)
    return scratch_database_url


async def test_every_table_has_a_place_in_the_distribution_plan(db: str) -> None:
    conn = await asyncpg.connect(db)
    try:
        present = {r["relname"] for r in await conn.fetch(_TABLES)}
    finally:
        await conn.close()
    planned = [*tables.DISTRIBUTED_TABLES, *tables.REFERENCE_TABLES, *tables.LOCAL_TABLES]
    assert len(planned) == len(set(planned))
    # memory_embeddings exists only where the server has pgvector (migration 0011).
    assert present - tables.OPTIONAL_TABLES == set(planned) - tables.OPTIONAL_TABLES
    assert present <= set(planned)
    for table in tables.DISTRIBUTED_TABLES:
        assert table in tables.OPTIONAL_TABLES or table in tables.RLS_TABLES, table


async def test_every_key_of_a_distributed_table_holds_user_id(db: str) -> None:
    assert await _violations(db) == []


async def test_the_check_finds_the_keys_before_migrations_0017_and_0018(db: str) -> None:
    """The check can fail: before 0017 (co-location) and 0018 (time partitions, which
    re-keyed memory_interactions) it names exactly the keys those two changed."""
    await migrate.downgrade(db, "0016")
    try:
        assert sorted(await _violations(db)) == [
            "idempotency_keys: unique pk_idempotency_keys ['caller', 'request_id'] lacks user_id",
            "memory_interactions: unique pk_memory_interactions ['id'] lacks user_id",
            "memory_revisions: unique pk_memory_revisions ['id'] lacks user_id",
            "user_memories: unique pk_user_memories ['id'] lacks user_id",
        ]
    finally:
        await migrate.upgrade(db)


async def test_the_scaling_guide_distributes_exactly_the_planned_tables() -> None:
    text = SCALING_DOC.read_text()
    distributed = re.findall(r"create_distributed_table\('(\w+)', 'user_id'", text)
    reference = re.findall(r"create_reference_table\('(\w+)'\)", text)
    assert sorted(distributed) == sorted(tables.DISTRIBUTED_TABLES)
    # In the order of REFERENCE_TABLES: each refers only to those before it.
    assert reference == list(tables.REFERENCE_TABLES)
