"""`memory-service backup | restore`: every table round-trips, and the service works on the copy.

On the embedded PostgreSQL 18 (with pgvector: embeddings included) by
default, on another server with FARADAY_TEST_DATABASE_URL (the machine's
15 has no pgvector: no embeddings table to copy).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet
from faraday.memory.v1 import memory_pb2, memory_service_pb2
from faraday_memory_client import AdminClient, MemoryClient

from memory_service import backup
from memory_service.config import Settings
from memory_service.seed import seed_demo
from memory_service.server import start
from memory_service.storage import migrate, tables
from memory_service.storage.lessons import TERM_JOB
from tests.conftest import create_scratch_database, drop_scratch_database
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "caller-test-3d"
KEY = Fernet.generate_key().decode()


@pytest.fixture
async def databases(pg_admin_url: str) -> AsyncIterator[tuple[str, str]]:
    """(a migrated source database, an empty target database), both dropped afterwards."""
    source = await create_scratch_database(pg_admin_url)
    target = await create_scratch_database(pg_admin_url)
    await migrate.upgrade(source)
    yield source, target
    for url in (source, target):
        await drop_scratch_database(pg_admin_url, url)


async def _has_vectors(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return bool(await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL"))
    finally:
        await conn.close()


def _settings(vectors: bool) -> Settings:
    # With keys: users' sensitive fields go into the dump as ciphertext.
    settings = TEST_SETTINGS.with_overrides(encryption_keys=KEY)
    if vectors:
        return settings.with_overrides(embedding_model=MODEL, embedding_dimension=3)
    return settings


async def _populate(url: str, vectors: bool) -> tuple[str, list[int]]:
    """Fill every table through the real service; return a user and its recall's ids."""
    app_url = migrate.app_role_url(url)
    await seed_demo(app_url, migrate.platform_role_url(app_url))
    running = await start(_settings(vectors), app_url)
    address = f"127.0.0.1:{running.port}"
    try:
        async with AdminClient(address) as admin, MemoryClient(address) as client:
            user = await admin.upsert_user(email="backup@school.example.org", name="Ada Backup")
            await admin.upsert_user_preferences(user_id=user.id, theme="dark", language="en")
            vector = {"embedding": [0.1, 0.2, 0.3], "embedding_model": MODEL} if vectors else {}
            stored = await client.store_memory(
                user_id=user.id,
                content="Prefers worked examples before theory.",
                category="preference",
                tags=["pedagogy"],
                metadata={"term": "autumn"},
                context={"course": "algebra"},
                request_id="backup-test-1",  # an idempotency key
                **vector,  # type: ignore[arg-type]
            )
            await client.store_memory(  # keeps its vector: its content never changes
                user_id=user.id,
                content="Runs the algebra club on Thursdays.",
                category="fact",
                **vector,  # type: ignore[arg-type]
            )
            stored.content = "Prefers worked examples before any theory."
            await client.update_memory(stored, ["content"])  # a revision
            await client.record_feedback(stored.id, helpful=True)  # an interaction
            imported = await client.import_memories(
                [
                    memory_service_pb2.ImportItem(
                        import_id="lms-1",
                        memory=memory_pb2.Memory(
                            user_id=user.id, content="Teaches two algebra groups.", category="fact"
                        ),
                    )
                ]
            )
            assert imported.created == 1
            recalled = await client.recall(user.id, "worked examples algebra")
            ids = sorted(m.memory.id for m in recalled)
    finally:
        await running.stop(0.5)
    # The lesson term job counts only words in more than 500 lessons; one
    # such count, and its run (migration 0021), as it would write them.
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO lesson_term_frequencies VALUES ('fraction', 501)")
        await conn.execute("INSERT INTO job_runs VALUES ($1, now())", TERM_JOB)
    finally:
        await conn.close()
    return user.id, ids


async def _table_names(conn: asyncpg.Connection) -> list[str]:
    names = [t.name for t in tables.metadata.sorted_tables] + ["alembic_version"]
    if await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL"):
        names.append("memory_embeddings")
    return names


async def _contents(url: str) -> dict[str, tuple[int, str]]:
    """Each table's row count and a hash of all its rows (as the owner, a superuser here)."""
    conn = await asyncpg.connect(url)
    try:
        out = {}
        for name in await _table_names(conn):
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text),"
                f" '')) AS h FROM {name} t"
            )
            out[name] = (row["n"], row["h"])
        return out
    finally:
        await conn.close()


async def _protection(url: str) -> list[tuple[object, ...]]:
    """Grants, row-level security flags and policies of every relation in public.

    An ACL that grants the owner everything and no one else anything is the
    default one, however spelled: NULL after a restore, explicit on a table
    whose grants were revoked (migration 0018's history partitions)."""
    conn = await asyncpg.connect(url)
    try:
        rels = await conn.fetch("""
            SELECT relname,
                   nullif(relacl, acldefault(CASE WHEN relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                             relowner))::text,
                   relrowsecurity, relforcerowsecurity
            FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY relname
        """)
        policies = await conn.fetch(
            "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies"
            " ORDER BY tablename, policyname"
        )
        # The database's own settings (migration 0011's hnsw.iterative_scan).
        settings = await conn.fetchval("""
            SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0
              AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
        """)
        return [tuple(r) for r in rels] + [tuple(p) for p in policies] + [(settings,)]
    finally:
        await conn.close()


async def test_backup_and_restore_round_trip_every_table(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = databases
    vectors = await _has_vectors(source)
    user, recalled = await _populate(source, vectors)
    before = await _contents(source)
    empty = {name for name, (rows, _) in before.items() if rows == 0}
    assert not empty, f"tables the test leaves empty: {sorted(empty)}"
    assert recalled

    dump = tmp_path / "faraday.dump"
    await backup.backup(source, dump)
    assert dump.stat().st_mode & 0o077 == 0  # user data: private to its owner
    await backup.restore(target, dump)

    assert await _contents(target) == before
    assert await _protection(target) == await _protection(source)

    # The service runs on the copy, as its roles, under row-level security.
    running = await start(_settings(vectors), migrate.app_role_url(target))
    try:
        async with MemoryClient(f"127.0.0.1:{running.port}") as client:
            again = await client.recall(user, "worked examples algebra", skip_access_tracking=True)
            assert sorted(m.memory.id for m in again) == recalled
            stored = await client.store_memory(
                user_id=user, content="A new fact after the restore.", category="fact"
            )
            assert stored.id > max(recalled)  # the identity sequences came along
    finally:
        await running.stop(0.5)

    # A second restore into the now non-empty database is refused; --clean replaces it.
    with pytest.raises(backup.BackupError, match="not empty"):
        await backup.restore(target, dump)
    await backup.restore(target, dump, clean=True)
    assert await _contents(target) == before


async def test_backup_refuses_a_file_that_is_not_a_backup(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    _, target = databases
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"not a dump")
    with pytest.raises(backup.BackupError, match="not a backup"):
        await backup.restore(target, junk)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memory_service.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_cli_backup_and_restore(databases: tuple[str, str], tmp_path: Path) -> None:
    source, target = databases
    dump = tmp_path / "cli.dump"
    done = _cli("backup", "--database-url", source, "--output", str(dump))
    assert done.returncode == 0, done.stderr
    assert f"backup written to {dump}" in done.stdout
    done = _cli("restore", str(dump), "--database-url", target)
    assert done.returncode == 0, done.stderr
    # Refused, with one line and no traceback.
    done = _cli("restore", str(dump), "--database-url", target)
    assert done.returncode == 1
    assert done.stderr.strip().startswith("restore failed: database ")
    assert "not empty" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert await _contents(target) == await _contents(source)


async def test_cli_on_the_embedded_default_with_zero_configuration() -> None:
    """seed-demo, backup, then restore into a second embedded server's fresh database."""
    await asyncio.to_thread(_embedded_round_trip)


def _embedded_round_trip() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARADAY_")}
    with (
        tempfile.TemporaryDirectory(prefix="faraday-backup-a-") as a,
        tempfile.TemporaryDirectory(prefix="faraday-backup-b-") as b,
    ):
        dump = Path(a) / "embedded.dump"
        outputs = []
        for args in (
            ("seed-demo", "--data-dir", f"{a}/pgdata"),
            ("backup", "--data-dir", f"{a}/pgdata", "--output", str(dump)),
            ("restore", str(dump), "--data-dir", f"{b}/pgdata"),
        ):
            done = _cli(*args, env=env)
            assert done.returncode == 0, (args, done.stderr)
            outputs.append(done.stdout)
        assert "pginstall/bin/pg_dump 18" in outputs[1]  # the embedded server's own
        assert "restored" in outputs[2]
        # The first server made its key; the dump holds the users' ciphertext.
        assert (Path(a) / "pgdata.encryption-keys").is_file()
        pg_restore = backup.choose_tool("pg_restore", 18, 18)
        users = subprocess.run(
            [pg_restore.path, "--data-only", "--table=users", "--file=-", str(dump)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "ada.lovelace@lincoln-middle.example.org" in users
        assert "Lincoln Middle School" not in users and "Ada Lovelace" not in users


async def test_a_schema_owner_that_is_no_superuser_needs_bypassrls_to_back_up(
    pg_admin_url: str, tmp_path: Path
) -> None:
    """As on a managed server: the owner is subject to the forced row-level security."""
    from sqlalchemy.engine import make_url

    role = f"faraday_owner_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_admin_url)
    if await admin.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
        await admin.close()
        pytest.skip(
            "with pgvector, migration 0011 needs a superuser (CREATE EXTENSION vector, ALTER"
            " DATABASE SET hnsw.iterative_scan): runs on a server without it"
        )
    await admin.execute(f"CREATE ROLE {role} LOGIN CREATEDB CREATEROLE")
    names = [f"faraday_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        await admin.execute(f'CREATE DATABASE "{name}" OWNER {role}')
    base = make_url(pg_admin_url).set(username=role)._replace(password=None)
    source, target = (base.set(database=n).render_as_string(hide_password=False) for n in names)
    try:
        await migrate.upgrade(source)
        as_superuser = make_url(pg_admin_url).set(database=names[0])
        conn = await asyncpg.connect(as_superuser.render_as_string(hide_password=False))
        try:
            await conn.execute("INSERT INTO users (email) VALUES ('owner@school.example.org')")
        finally:
            await conn.close()
        dump = tmp_path / "owner.dump"
        with pytest.raises(backup.BackupError, match="BYPASSRLS"):
            await backup.backup(source, dump)
        assert not dump.exists()  # no partial file left behind
        await admin.execute(f"ALTER ROLE {role} BYPASSRLS")
        await backup.backup(source, dump)
        await admin.execute(f"ALTER ROLE {role} NOBYPASSRLS")
        await backup.restore(target, dump)  # restoring needs no BYPASSRLS
        as_superuser = as_superuser.set(database=names[1])
        assert await _contents(as_superuser.render_as_string(hide_password=False)) == (
            await _contents(
                make_url(pg_admin_url).set(database=names[0]).render_as_string(hide_password=False)
            )
        )
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
