"""Read replicas: a real streaming replica of a private PostgreSQL 15 primary.

The primary is initdb'ed here (wal_level=replica, trust for replication on
loopback), the standby made from it with pg_basebackup -R, both on free
ports, run as the postgres user when the tests run as root (PostgreSQL
refuses root). The service gets the primary's URL and the replica's, and the
test checks docs/scaling.md's promises:

- a routed read (GetMemory, ListMemories, ListLessons, SearchLessons,
  ExportUserData) is answered by the replica while it lags by at most
  replica_max_lag_seconds: shown by data only the replica still has (its
  replay paused, a row changed on the primary behind the service's back);
- never staler than that: once the bound passes, the primary answers;
- read-your-writes: a read right after a write made through the service sees it;
- writes go to the primary (a standby refuses them), and so does recall;
- with the replica stopped, every read still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from google.protobuf import field_mask_pb2

from memory_service.server import start
from memory_service.storage import migrate
from tests.faults.conftest import FAULT_SETTINGS, free_port, query
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MAX_LAG = 3.0  # replica_max_lag_seconds of the service under test


def _as_postgres() -> list[str]:
    """The prefix that runs a command as the postgres user when we are root."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser: cannot run PostgreSQL as postgres")
    return [runuser, "-u", "postgres", "--"]


def _run(*command: str | Path) -> None:
    # Output to a file, not a pipe: a postmaster must not hold our pipe open.
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            [*_as_postgres(), *map(str, command)],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
        out.seek(0)
        text = out.read().decode(errors="replace")
    if done.returncode != 0:
        raise AssertionError(f"{command[0]} failed ({done.returncode}):\n{text}")


@dataclass
class Cluster:
    """One PostgreSQL server: its data directory and port."""

    pgdata: Path
    port: int
    running: bool = False

    @property
    def owner_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = self.pgdata.parent / f"{self.pgdata.name}.log"
        _run(PG_BIN / "pg_ctl", "-D", self.pgdata, "-l", log, "-w", "-t", "60", "start")
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            _run(PG_BIN / "pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop")


@dataclass
class Pair:
    primary: Cluster
    replica: Cluster


@contextlib.contextmanager
def _streaming_pair() -> Iterator[Pair]:
    missing = [b for b in ("initdb", "pg_ctl", "pg_basebackup") if not (PG_BIN / b).exists()]
    if missing:
        print(f"skipping: no PostgreSQL 15 {', '.join(missing)} in {PG_BIN}")
        pytest.skip(f"no PostgreSQL 15 binaries in {PG_BIN} ({', '.join(missing)})")
    prefix = _as_postgres()
    with tempfile.TemporaryDirectory(prefix="faraday-replica-") as tmp:
        root = Path(tmp)
        if prefix:
            shutil.chown(root, "postgres", "postgres")
        sockets = root / "sockets"
        sockets.mkdir()
        if prefix:
            shutil.chown(sockets, "postgres", "postgres")
        primary = Cluster(root / "primary", free_port())
        replica = Cluster(root / "replica", free_port())
        try:
            _run(PG_BIN / "initdb", "-D", primary.pgdata, "-U", "postgres", "-A", "trust", "-N")
            # initdb's pg_hba.conf already lets loopback replicate with -A trust.
            _append(
                primary.pgdata / "postgresql.conf",
                f"port = {primary.port}",
                "listen_addresses = '127.0.0.1'",
                f"unix_socket_directories = '{sockets}'",
                "wal_level = replica",
                "max_wal_senders = 4",
                "hot_standby = on",
                "fsync = off",
            )
            primary.start()
            _run(
                PG_BIN / "pg_basebackup",
                *("-D", replica.pgdata, "-R", "-X", "stream", "-c", "fast"),
                *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            )
            # The copied postgresql.conf names the primary's port: the later line wins.
            _append(replica.pgdata / "postgresql.conf", f"port = {replica.port}")
            replica.start()
            yield Pair(primary, replica)
        finally:
            replica.stop()
            primary.stop()


def _append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("\n" + "\n".join(lines) + "\n")


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    with _streaming_pair() as p:
        await migrate.upgrade(p.primary.owner_url)
        yield p


async def _until(check: object, within: float, what: str) -> None:
    ends = time.monotonic() + within
    while True:
        if await check():  # type: ignore[operator]
            return
        assert time.monotonic() < ends, f"not within {within}s: {what}"
        await asyncio.sleep(0.05)


async def _replica_has(pair: Pair, memory_id: int, content: str) -> bool:
    rows = await query(
        pair.replica.owner_url, "SELECT content FROM user_memories WHERE id = $1", memory_id
    )
    return bool(rows) and rows[0]["content"] == content


@pytest.mark.slow
async def test_reads_go_to_a_fresh_replica_and_fall_back_to_the_primary(pair: Pair) -> None:
    settings = FAULT_SETTINGS.with_overrides(
        replica_database_url=migrate.app_role_url(pair.replica.owner_url),
        replica_max_lag_seconds=MAX_LAG,
    )
    running = await start(settings, migrate.app_role_url(pair.primary.owner_url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            admin = admin_service_pb2_grpc.AdminServiceStub(channel)
            memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
            lessons = lesson_service_pb2_grpc.LessonServiceStub(channel)

            # Writes go to the primary (the standby would refuse them), and a
            # read right after each sees it: read-your-writes.
            user = await register_user(admin)
            stored = await memories.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(user_id=user, content="first", category="fact")
                )
            )
            got = await memories.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
            assert got.content == "first"
            updated = await memories.UpdateMemory(
                memory_service_pb2.UpdateMemoryRequest(
                    memory=memory_pb2.Memory(id=stored.id, content="second", etag=got.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["content"]),
                )
            )
            got = await memories.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
            assert (got.content, got.etag) == ("second", updated.etag)
            lesson = await admin.UpsertLesson(
                admin_service_pb2.UpsertLessonRequest(
                    lesson=lesson_pb2.Lesson(title="Photosynthesis", user_id=user)
                )
            )
            listed = await lessons.ListLessons(lesson_service_pb2.ListLessonsRequest())
            assert [item.id for item in listed.lessons] == [lesson.id]

            # Freeze the replica at this state, then change the row on the
            # primary behind the service's back (its own writes would send
            # its reads to the primary). Within the lag bound the replica may
            # answer, and its old value proves that it did.
            await _until(lambda: _replica_has(pair, stored.id, "second"), 10, "replayed")
            await _until(_fresh(running), 10, "the monitor sees the replica caught up")
            await query(pair.replica.owner_url, "SELECT pg_wal_replay_pause()")
            await query(
                pair.primary.owner_url,
                "UPDATE user_memories SET content = 'third' WHERE id = $1",
                stored.id,
            )
            behind_since = time.monotonic()
            got = await memories.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
            if time.monotonic() - behind_since < MAX_LAG / 2:  # a slow machine proves nothing
                assert got.content == "second", "GetMemory did not read the replica"
                page = await memories.ListMemories(
                    memory_service_pb2.ListMemoriesRequest(user_id=user)
                )
                assert [m.content for m in page.memories] == ["second"]
            # Past the bound the replica is no longer asked: the primary's value.
            await asyncio.sleep(MAX_LAG + 0.5)
            got = await memories.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
            assert got.content == "third"
            assert await _replica_has(pair, stored.id, "second"), "the replica moved on"
            await query(pair.replica.owner_url, "SELECT pg_wal_replay_resume()")
            await _until(_fresh(running), 10, "the replica catches up again")

            # Every routed read works on the replica, and the service's pools
            # did connect to it (they open lazily, on the first routed read).
            await _routed_reads_work(memories, lessons, admin, user, stored.id, lesson.id)
            apps = await query(
                pair.replica.owner_url,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
                "faraday-memory",
            )
            assert apps[0]["n"] >= 1, "no pool connection on the replica"
            # Recall writes (access times, interactions): the primary serves it.
            recalled = await memories.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(user_id=user, query="third")
            )
            assert [m.memory.id for m in recalled.memories] == [stored.id]

            # The replica stopped: reads still work, from the primary.
            await asyncio.to_thread(pair.replica.stop)
            await _routed_reads_work(memories, lessons, admin, user, stored.id, lesson.id)
            await asyncio.sleep(MAX_LAG + 0.5)
            await _routed_reads_work(memories, lessons, admin, user, stored.id, lesson.id)
    finally:
        await running.stop(1)


def _fresh(running: object) -> object:
    async def check() -> bool:
        return running.database.replica_fresh()  # type: ignore[attr-defined,no-any-return]

    return check


async def _routed_reads_work(
    memories: memory_service_pb2_grpc.MemoryServiceStub,
    lessons: lesson_service_pb2_grpc.LessonServiceStub,
    admin: admin_service_pb2_grpc.AdminServiceStub,
    user: str,
    memory_id: int,
    lesson_id: int,
) -> None:
    timeout = 10
    got = await memories.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=memory_id), timeout=timeout
    )
    assert got.content == "third"
    page = await memories.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user), timeout=timeout
    )
    assert [m.id for m in page.memories] == [memory_id]
    await memories.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(user_id=user), timeout=timeout
    )
    revisions = await memories.ListMemoryRevisions(
        memory_service_pb2.ListMemoryRevisionsRequest(memory_id=memory_id), timeout=timeout
    )
    assert [r.content for r in revisions.revisions][-1:] == ["first"]
    got_lesson = await lessons.GetLesson(
        lesson_service_pb2.GetLessonRequest(id=lesson_id), timeout=timeout
    )
    assert got_lesson.title == "Photosynthesis"
    found = await lessons.SearchLessons(
        lesson_service_pb2.SearchLessonsRequest(query="photosynthesis"), timeout=timeout
    )
    assert [m.lesson.id for m in found.matches] == [lesson_id]
    records = [
        r
        async for r in admin.ExportUserData(
            admin_service_pb2.ExportUserDataRequest(user_id=user), timeout=timeout
        )
    ]
    assert sum(r.HasField("memory") for r in records) == 1
    assert sum(r.HasField("lesson") for r in records) == 1
