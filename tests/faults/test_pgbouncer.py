"""The service behind a real PgBouncer in transaction mode (docs/pooling.md).

PgBouncer hands a server connection to a client for one transaction only, so
consecutive transactions of one pooled service connection run on different
server connections, and one server connection serves many service
connections in turn. The test starts PgBouncer with fewer server connections
than the service opens, runs real gRPC calls concurrently through it (store,
import, update, feedback, recall, revisions), and checks that two users'
interleaved JWT calls never see each other's memories: the acting user is set
per transaction (storage/session.py), never left on a shared connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import grpc
import jwt
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)
from google.protobuf import field_mask_pb2

from memory_service.auth import token_hash
from memory_service.config import Settings
from memory_service.server import start
from memory_service.storage import session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.probe import DatabaseProbe
from memory_service.storage.tables import APP_ROLE, PLATFORM_ROLE
from tests.faults.conftest import Urls, free_port, query

# Server connections PgBouncer opens per (database, role): fewer than the
# service's pools hold, so service connections take turns on them.
SERVER_CONNECTIONS = 2
USER_POOL = 3  # the service's faraday_app connections, for user-JWT calls
SECRET = "pgbouncer-test-secret-that-is-long-enough-for-hs256!"


def _pgbouncer_binary() -> str | None:
    for candidate in (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _server_address(owner_url: str) -> tuple[str, int]:
    """(host or socket directory, port) of the PostgreSQL an owner URL names."""
    parts = urlsplit(owner_url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port
    if port is None and host.startswith("/"):
        sockets = [p for p in Path(host).glob(".s.PGSQL.*") if not p.name.endswith(".lock")]
        port = int(sockets[0].name.rsplit(".", 1)[1]) if sockets else None
    return host, port or 5432


def _run_as() -> str | None:
    """PgBouncer refuses to run as root: the user it switches to, when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "postgres", "nobody"):  # the first can reach the socket
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    pytest.skip("running as root and no unprivileged user for pgbouncer to switch to")


@dataclass
class Bouncer:
    port: int
    version: str
    log: Path

    def url(self, owner_url: str, role: str) -> str:
        database = urlsplit(owner_url).path.lstrip("/")
        return f"postgresql://{role}@127.0.0.1:{self.port}/{database}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _bouncer_config(directory: Path, owner_url: str, port: int, run_as: str | None) -> Path:
    host, server_port = _server_address(owner_url)
    users = directory / "users.txt"
    users.write_text("".join(f'"{r}" ""\n' for r in (APP_ROLE, PLATFORM_ROLE, "postgres")))
    config = directory / "pgbouncer.ini"
    config.write_text(
        "\n".join(
            [
                "[databases]",
                # Any database name: the server's database of that name.
                f"* = host={host} port={server_port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {users}",
                "pool_mode = transaction",
                f"default_pool_size = {SERVER_CONNECTIONS}",
                "max_client_conn = 100",
                "server_login_retry = 1",
                *([f"user = {run_as}"] if run_as else []),
                "",
            ]
        )
    )
    for path in (directory, users, config):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return config


def _start_pgbouncer(
    binary: str, directory: Path, owner_url: str
) -> tuple[Bouncer, subprocess.Popen[bytes]]:
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    port = free_port()
    config = _bouncer_config(directory, owner_url, port, _run_as())
    log = directory / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, str(config)], stdout=out, stderr=subprocess.STDOUT)
    return Bouncer(port, version, log), proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture
async def bouncer(migrated_database: Urls) -> AsyncIterator[Bouncer]:
    """A PgBouncer in transaction mode in front of the test database, on a free port."""
    binary = _pgbouncer_binary()
    if binary is None:
        print("skipped: pgbouncer is not installed (Debian: apt-get install pgbouncer)")
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    with tempfile.TemporaryDirectory(prefix="faraday-test-pgbouncer-") as tmp:
        bouncer, proc = _start_pgbouncer(binary, Path(tmp), migrated_database.owner)
        try:
            await _wait_until_it_answers(bouncer, proc, migrated_database.owner)
            yield bouncer
        finally:
            _stop(proc)


async def _wait_until_it_answers(
    bouncer: Bouncer, proc: subprocess.Popen[bytes], owner_url: str
) -> None:
    deadline = time.monotonic() + 15
    url = bouncer.url(owner_url, APP_ROLE)
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited {proc.returncode}:\n{bouncer.output()}")
        try:
            conn = await asyncpg.connect(url, timeout=2, statement_cache_size=0)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pgbouncer did not answer: {exc}\n{bouncer.output()}"
                ) from exc
            await asyncio.sleep(0.1)
            continue
        try:
            await conn.execute("SELECT 1")
            return
        finally:
            await conn.close()


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _user_token(user_id: str) -> str:
    return jwt.encode({"sub": user_id, "exp": int(time.time()) + 600}, SECRET, "HS256")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    token = f"fmt_svc_{uuid.uuid4().hex}"
    scopes = ["memories:read", "memories:write", "memories:import", "lessons:read", "admin"]
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps({"tokens": [{"name": "svc", "sha256": token_hash(token), "scopes": scopes}]})
    )
    yield path, token


async def test_the_service_works_behind_pgbouncer_in_transaction_mode(
    migrated_database: Urls, bouncer: Bouncer, tokens_file: tuple[Path, str]
) -> None:
    print(f"{bouncer.version}, pool_mode = transaction, default_pool_size = {SERVER_CONNECTIONS}")
    path, token = tokens_file
    settings = Settings(
        port=0,
        pool_size=USER_POOL + 3,
        user_pool_size=USER_POOL,
        pool_max_overflow=2,
        pool_timeout_seconds=10.0,
        sweep_interval_seconds=0,
        grace_period_seconds=1,
        database_pooler="pgbouncer",
        service_tokens_file=path,
        jwt_hs256_secret=SECRET,
        log_recall_interactions=True,
    )
    owner = migrated_database.owner
    running = await start(settings, bouncer.url(owner, APP_ROLE), bouncer.url(owner, PLATFORM_ROLE))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await _exercise(
                memory_service_pb2_grpc.MemoryServiceStub(channel),
                admin_service_pb2_grpc.AdminServiceStub(channel),
                _bearer(token),
            )
    finally:
        await running.stop(1.0)
    # The service's user-JWT calls really took turns on fewer server connections.
    database = urlsplit(owner).path.lstrip("/")
    rows = await query(
        owner,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1 AND datname = $2",
        APP_ROLE,
        database,
    )
    assert rows[0]["n"] <= SERVER_CONNECTIONS < USER_POOL, bouncer.output()


async def _exercise(
    memory: memory_service_pb2_grpc.MemoryServiceStub,
    admin: admin_service_pb2_grpc.AdminServiceStub,
    service: tuple[tuple[str, str]],
) -> None:
    users = [
        (
            await admin.UpsertUser(
                admin_service_pb2.UpsertUserRequest(
                    user=registry_pb2.User(
                        email=f"{name}-{uuid.uuid4().hex[:8]}@school.example.org", is_active=True
                    )
                ),
                metadata=service,
            )
        ).id
        for name in ("ada", "bo")
    ]

    async def store(user: str, n: int) -> memory_pb2.Memory:
        return await memory.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(
                    user_id=user,
                    content=f"Likes pooled chemistry, note {n} of {user}.",
                    category="fact",
                )
            ),
            metadata=service,
        )

    # Store concurrently, both users at once: more transactions than server connections.
    stored = await asyncio.gather(*(store(u, n) for n in range(6) for u in users))
    mine = {u: [m for m in stored if m.user_id == u] for u in users}
    assert all(len(ms) == 6 for ms in mine.values())

    # Import a few items per user (a temporary table dropped at commit).
    async def requests() -> AsyncIterator[memory_service_pb2.ImportMemoriesRequest]:
        yield memory_service_pb2.ImportMemoriesRequest(options=memory_service_pb2.ImportOptions())
        yield memory_service_pb2.ImportMemoriesRequest(
            items=memory_service_pb2.ImportItems(
                items=[
                    memory_service_pb2.ImportItem(
                        import_id=f"{u}-{n}",
                        memory=memory_pb2.Memory(
                            user_id=u, content=f"Imported pooled fact {n}.", category="fact"
                        ),
                    )
                    for u in users
                    for n in range(3)
                ]
            )
        )

    imported = await memory.ImportMemories(requests(), metadata=service)
    assert (imported.created, imported.rejected) == (6, 0), imported

    # Update (service token, then each user's own JWT) and feedback, concurrently.
    async def update(m: memory_pb2.Memory, content: str, metadata: tuple[tuple[str, str]]) -> None:
        changed = await memory.UpdateMemory(
            memory_service_pb2.UpdateMemoryRequest(
                memory=memory_pb2.Memory(id=m.id, content=content),
                update_mask=field_mask_pb2.FieldMask(paths=["content"]),
            ),
            metadata=metadata,
        )
        assert changed.content == content

    await asyncio.gather(*(update(mine[u][0], f"Revised by svc for {u}.", service) for u in users))
    await asyncio.gather(
        *(update(mine[u][0], f"Revised by {u}.", _bearer(_user_token(u))) for u in users),
        *(
            memory.RecordFeedback(
                memory_service_pb2.RecordFeedbackRequest(memory_id=m.id, helpful=True),
                metadata=service,
            )
            for u in users
            for m in mine[u][1:3]
        ),
    )

    # Revisions name who made each change: the actor travels in each transaction.
    for u in users:
        revisions = await memory.ListMemoryRevisions(
            memory_service_pb2.ListMemoryRevisionsRequest(memory_id=mine[u][0].id),
            metadata=service,
        )
        # A revision keeps the values a change replaced, and who made the change.
        by_content = {r.content: r.changed_by for r in revisions.revisions}
        assert by_content == {
            f"Likes pooled chemistry, note 0 of {u}.": "service:svc",
            f"Revised by svc for {u}.": f"user:{u}",
        }

    # Two users interleaved on shared server connections: each sees only their own.
    ids = {u: {m.id for m in mine[u]} for u in users}

    async def as_user(u: str, other: str, rounds: int) -> None:
        own = _bearer(_user_token(u))
        for _ in range(rounds):
            recalled, listed = await asyncio.gather(
                memory.RecallMemories(
                    memory_service_pb2.RecallMemoriesRequest(
                        user_id=u, query="pooled chemistry", limit=50
                    ),
                    metadata=own,
                ),
                memory.ListMemories(
                    memory_service_pb2.ListMemoriesRequest(user_id=u, page_size=100),
                    metadata=own,
                ),
            )
            assert recalled.memories, f"{u} recalled nothing"
            assert {s.memory.user_id for s in recalled.memories} == {u}
            assert {m.user_id for m in listed.memories} == {u}
            assert len(listed.memories) == 9  # 6 stored and 3 imported
            assert ids[u] <= {m.id for m in listed.memories}
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await memory.GetMemory(
                    memory_service_pb2.GetMemoryRequest(id=next(iter(ids[other]))), metadata=own
                )
            assert denied.value.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            )

    a, b = users
    await asyncio.gather(as_user(a, b, 8), as_user(b, a, 8), as_user(a, b, 8), as_user(b, a, 8))


async def test_behind_pgbouncer_each_transaction_sets_what_a_direct_login_would(
    migrated_database: Urls, bouncer: Bouncer
) -> None:
    """jit = off, which PgBouncer refuses at login, comes with each BEGIN instead, and
    stays in its transaction; no named statement is left on a shared server connection."""
    owner = migrated_database.owner
    database = Database(
        PoolSettings(
            url=bouncer.url(owner, APP_ROLE),
            platform_url=bouncer.url(owner, PLATFORM_ROLE),
            size=3,
            user_size=1,
            max_overflow=0,
            pooler="pgbouncer",
        )
    )
    await database.open()
    try:
        with session.acting_as(session.ALL_USERS):
            for _ in range(3):
                async with database.connection() as conn:
                    settings = await conn.fetchrow(
                        "SELECT current_setting('jit') AS jit,"
                        " current_setting('application_name') AS application,"
                        " current_setting('faraday.acting_user') AS acting_user"
                    )
                    assert settings is not None
                    assert dict(settings) == {
                        "jit": "off",
                        "application": "faraday-memory",
                        "acting_user": "*",
                    }
    finally:
        await database.close()
    # The health probe's connection, too, takes turns on the server connections.
    probe = DatabaseProbe(bouncer.url(owner, PLATFORM_ROLE), 5.0, transaction_pooled=True)
    try:
        assert [await probe.check() for _ in range(5)] == [None] * 5
    finally:
        await probe.close()
    # Outside the transactions nothing stayed: not the setting, not a statement.
    conn = await asyncpg.connect(bouncer.url(owner, PLATFORM_ROLE), statement_cache_size=0)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('jit') = reset_val AS jit_as_configured,"
            " (SELECT count(*) FROM pg_prepared_statements) AS statements"
            " FROM pg_settings WHERE name = 'jit'"
        )
    finally:
        await conn.close()
    assert row is not None and (row["jit_as_configured"], row["statements"]) == (True, 0)
