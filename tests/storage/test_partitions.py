"""The partition job (migration 0018): partitions ahead, retention, the DEFAULT
partition's rows, the service roles' limits, and traffic while it runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from memory_service.services.partitions import PartitionJob, Retention
from memory_service.storage import migrate
from memory_service.storage.database import Database
from memory_service.storage.partitions import PERIODS_AHEAD, PartitionStore
from tests.storage.helpers import service_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOCK_TIMEOUT_SECONDS = 0.1
DAY = dt.timedelta(days=1)
RETENTION = Retention(interaction_days=5, audit_days=365)


def _next_month(start: dt.datetime) -> dt.datetime:
    return (start.replace(day=1) + 32 * DAY).replace(day=1)


def _today() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
async def db(scratch_database_url: str) -> str:
    await migrate.upgrade(scratch_database_url)
    return scratch_database_url


@pytest.fixture
async def owner(db: str) -> AsyncIterator[asyncpg.Connection]:
    """The schema owner (a superuser: row-level security does not bind it)."""
    conn = await asyncpg.connect(db)
    yield conn
    await conn.close()


@pytest.fixture
async def service(db: str) -> AsyncIterator[Database]:
    database = service_database(db)
    await database.open()
    yield database
    await database.close()


def _job(database: Database, retention: Retention = RETENTION) -> PartitionJob:
    return PartitionJob(PartitionStore(database, LOCK_TIMEOUT_SECONDS), retention)


async def _memory(owner: asyncpg.Connection) -> tuple[uuid.UUID, int]:
    user = await owner.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", f"{uuid.uuid4().hex}@example.org"
    )
    memory = await owner.fetchval(
        "INSERT INTO user_memories (user_id, content, category) VALUES ($1, 'x', 'fact')"
        " RETURNING id",
        user,
    )
    return user, memory


async def _log(owner: asyncpg.Connection, memory: tuple[uuid.UUID, int], *at: dt.datetime) -> None:
    await owner.executemany(
        'INSERT INTO memory_interactions (memory_id, user_id, interaction_type, "timestamp")'
        " VALUES ($1, $2, 'recall', $3)",
        [(memory[1], memory[0], when) for when in at],
    )


async def _old_partition(owner: asyncpg.Connection, start: dt.datetime) -> str:
    """A day's partition of memory_interactions in the past, where the job
    would have made it (the history partition is moved out of the way)."""
    name = f"memory_interactions_p{start:%Y%m%d}"
    await owner.execute(
        f"CREATE TABLE {name} PARTITION OF memory_interactions"
        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + DAY).isoformat()}')"
    )
    return name


async def _partitions(owner: asyncpg.Connection, parent: str) -> dict[str, Any]:
    rows = await owner.fetch(
        "SELECT partition, lower_bound, upper_bound FROM faraday_partition_bounds($1)", parent
    )
    return {r["partition"]: (r["lower_bound"], r["upper_bound"]) for r in rows}


async def test_the_job_keeps_partitions_ahead_and_is_idempotent(
    owner: asyncpg.Connection, service: Database
) -> None:
    interactions = await _partitions(owner, "memory_interactions")
    # The migration made them; the history partition holds today.
    today = _today()
    assert interactions["memory_interactions_history"] == (None, today + DAY)
    assert interactions["memory_interactions_default"] == (None, None)
    for days in range(1, PERIODS_AHEAD["memory_interactions"] + 1):
        start = today + days * DAY
        assert interactions[f"memory_interactions_p{start:%Y%m%d}"] == (start, start + DAY)
    # What it would add after a day: drop one, and the job puts it back.
    last = today + PERIODS_AHEAD["memory_interactions"] * DAY
    await owner.execute(f"DROP TABLE memory_interactions_p{last:%Y%m%d}")
    assert await _job(service).run() == 1
    assert await _partitions(owner, "memory_interactions") == interactions
    assert await _job(service).run() == 0

    next_month = _next_month(today)
    audit = await _partitions(owner, "audit_log")
    assert audit["audit_log_history"] == (None, next_month)
    assert audit[f"audit_log_p{next_month:%Y%m}"] == (next_month, _next_month(next_month))

    # The service roles see the same list.
    listed = await _job(service).partitions()
    assert {p.name for p in listed} == set(interactions) | set(audit)


async def test_retention_drops_whole_old_partitions_and_audits_it(
    owner: asyncpg.Connection, service: Database
) -> None:
    memory = await _memory(owner)
    await owner.execute("DROP TABLE memory_interactions_history")
    today = _today()
    expired = await _old_partition(owner, today - 10 * DAY)
    kept = await _old_partition(owner, today - 3 * DAY)
    await _log(owner, memory, today - 10 * DAY + dt.timedelta(hours=5), today - 3 * DAY)
    two_years_ago = (today - 730 * DAY).replace(day=1)
    await owner.execute("DROP TABLE audit_log_history")
    await owner.execute(
        f"CREATE TABLE audit_log_p{two_years_ago:%Y%m} PARTITION OF audit_log FOR VALUES"
        f" FROM ('{two_years_ago.isoformat()}') TO ('{_next_month(two_years_ago).isoformat()}')"
    )
    await owner.execute(
        "INSERT INTO audit_log (occurred_at, actor_kind, actor, method, outcome)"
        " VALUES ($1, 'user', 'ada', 'GetMemory', 'OK')",
        two_years_ago,
    )

    # Two drops, and the current day's and month's partitions, which were
    # the history partitions' until they went.
    assert await _job(service).run() == 4
    left = await _partitions(owner, "memory_interactions")
    assert kept in left and expired not in left
    assert await owner.fetchval("SELECT count(*) FROM memory_interactions") == 1
    assert await owner.fetchval("SELECT count(*) FROM audit_log WHERE actor = 'ada'") == 0
    trace = await owner.fetch(
        "SELECT actor_kind, actor, resource FROM audit_log"
        " WHERE method = 'faraday_drop_expired_partition' ORDER BY id"
    )
    assert [(r["actor_kind"], r["actor"]) for r in trace] == [("database", "faraday_platform")] * 2
    assert [json.loads(r["resource"]) for r in trace] == [
        {
            "table": "memory_interactions",
            "partition": expired,
            "rows_before": (today - 9 * DAY).isoformat(),
            "retention_days": 5,
        },
        {
            "table": "audit_log",
            "partition": f"audit_log_p{two_years_ago:%Y%m}",
            "rows_before": _next_month(two_years_ago).isoformat(),
            "retention_days": 365,
        },
    ]


async def test_a_row_without_a_partition_is_kept_then_given_one(
    owner: asyncpg.Connection, service: Database
) -> None:
    memory = await _memory(owner)
    await owner.execute("DROP TABLE memory_interactions_history")
    today = _today()
    far_future = today + 200 * DAY + dt.timedelta(hours=3)
    long_ago = dt.datetime(2001, 2, 3, 4, 5, tzinfo=dt.UTC)
    await _log(owner, memory, far_future, long_ago, long_ago + dt.timedelta(minutes=1))
    caught = "SELECT count(*) FROM memory_interactions_default"
    assert await owner.fetchval(caught) == 3

    # Adopted into partitions of their own days, none lost (and today's made,
    # the history partition's until it went); then the old day goes by
    # retention like any other, the future one stays.
    retained = Retention(interaction_days=36500, audit_days=36500)
    assert await _job(service, retained).run() == 3
    assert await owner.fetchval(caught) == 0
    partitions = await _partitions(owner, "memory_interactions")
    assert partitions["memory_interactions_p20010203"] == (
        dt.datetime(2001, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2001, 2, 4, tzinfo=dt.UTC),
    )
    assert f"memory_interactions_p{far_future:%Y%m%d}" in partitions
    assert await owner.fetchval("SELECT count(*) FROM memory_interactions") == 3

    assert await _job(service).run() == 1
    assert await owner.fetchval("SELECT count(*) FROM memory_interactions") == 1
    assert "memory_interactions_p20010203" not in await _partitions(owner, "memory_interactions")


@pytest.mark.parametrize("role", ["app", "platform"])
async def test_the_service_roles_cannot_drop_partitions_or_delete_audit_rows(
    db: str, owner: asyncpg.Connection, role: str
) -> None:
    await owner.execute(
        "INSERT INTO audit_log (actor_kind, actor, method, outcome) VALUES ('user', 'a', 'b', 'OK')"
    )
    url = migrate.app_role_url(db) if role == "app" else migrate.platform_role_url(db)
    conn = await asyncpg.connect(url)
    try:
        tomorrow = _today() + DAY
        partition = f"memory_interactions_p{tomorrow:%Y%m%d}"
        for statement in (
            f"DROP TABLE {partition}",
            "DROP TABLE audit_log_history",
            f"ALTER TABLE memory_interactions DETACH PARTITION {partition}",
            "DELETE FROM audit_log",
            "UPDATE audit_log SET actor = 'someone else'",
            "TRUNCATE audit_log",
            # Partitions are reached through their parent only.
            "SELECT count(*) FROM audit_log_history",
            "DELETE FROM audit_log_default",
            f"SELECT count(*) FROM {partition}",
            "SELECT count(*) FROM memory_interactions_default",
            # The functions' internals are the owner's.
            f"SELECT faraday_create_partition('audit_log', '{tomorrow.isoformat()}')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        job_call = "SELECT faraday_drop_expired_partition('audit_log', 400)"
        if role == "app":  # user-scoped calls never run the job
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(job_call)
        else:
            await conn.execute(job_call)
            for statement in (
                # Not below the documented minimum retention, nor any other table.
                "SELECT faraday_drop_expired_partition('audit_log', 364)",
                "SELECT faraday_drop_expired_partition('memory_interactions', 0)",
                "SELECT faraday_drop_expired_partition('users', 400)",
                "SELECT faraday_add_partition('user_memories', 0)",
                "SELECT faraday_add_partition('memory_interactions', 93)",
                "SELECT faraday_add_partition('memory_interactions', -1)",
            ):
                with pytest.raises(asyncpg.InvalidParameterValueError):
                    await conn.execute(statement)
    finally:
        await conn.close()
    assert await owner.fetchval("SELECT count(*) FROM audit_log") == 1


@pytest.mark.slow
async def test_the_job_never_holds_up_inserts_longer_than_its_lock_timeout(
    db: str, owner: asyncpg.Connection, service: Database
) -> None:
    """Inserts and reads run throughout while a long read keeps the job from
    its ACCESS EXCLUSIVE lock: they wait at most about the lock timeout."""
    memory = await _memory(owner)
    await owner.execute("DROP TABLE memory_interactions_history")
    today = _today()
    expired = [await _old_partition(owner, today - days * DAY) for days in range(10, 20)]
    latencies: list[float] = []
    stop = asyncio.Event()

    async def insert_and_read() -> None:
        conn = await asyncpg.connect(db)
        try:
            while not stop.is_set():
                began = time.perf_counter()
                await conn.execute(
                    "INSERT INTO memory_interactions (memory_id, user_id, interaction_type)"
                    " VALUES ($1, $2, 'recall')",
                    memory[1],
                    memory[0],
                )
                await conn.fetchval("SELECT count(*) FROM memory_interactions")
                latencies.append(time.perf_counter() - began)
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    async def long_read() -> None:
        conn = await asyncpg.connect(db)
        try:
            async with conn.transaction():
                await conn.fetchval("SELECT count(*) FROM memory_interactions")
                await asyncio.sleep(1.5)  # holds ACCESS SHARE on every partition
        finally:
            await conn.close()

    traffic = [asyncio.create_task(insert_and_read()) for _ in range(3)]
    try:
        await asyncio.sleep(0.3)
        baseline = max(latencies)
        reader = asyncio.create_task(long_read())
        await asyncio.sleep(0.1)
        began = time.perf_counter()
        handled = await _job(service).run()
        job_seconds = time.perf_counter() - began
        await reader
    finally:
        stop.set()
        await asyncio.gather(*traffic)

    # The drops, and today's partition, made while rows for it poured into the
    # DEFAULT partition (the history partition, which held today, is gone).
    assert handled == len(expired) + 1
    assert await owner.fetchval("SELECT count(*) FROM memory_interactions_default") == 0
    assert not set(expired) & set(await _partitions(owner, "memory_interactions"))
    assert job_seconds > 1.0  # it did wait for the long read, retrying
    worst = max(latencies)
    print(f"baseline worst {baseline * 1000:.1f} ms, worst while the job ran {worst * 1000:.1f} ms")
    # Without the lock timeout they would have waited out the long read (~1.4 s).
    assert worst < LOCK_TIMEOUT_SECONDS + max(0.15, 2 * baseline)


async def test_the_partitions_command_runs_the_job_and_lists_them(
    db: str, owner: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    from memory_service import cli

    last = _today() + PERIODS_AHEAD["memory_interactions"] * DAY
    await owner.execute(f"DROP TABLE memory_interactions_p{last:%Y%m%d}")
    # Its own event loop: in a thread, as on the command line.
    flags = ["--database-url", migrate.app_role_url(db), "--interaction-retention-days", "30"]
    await asyncio.to_thread(cli.main, ["partitions", "--run", *flags])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "partitions created or dropped: 1"
    listed = {line.split()[1]: line.split()[0] for line in out[2:]}
    assert listed == {
        name: parent for parent in PERIODS_AHEAD for name in await _partitions(owner, parent)
    }
    assert f"memory_interactions_p{last:%Y%m%d}" in listed
    assert "memory_interactions_default" in listed
