"""ListInteractions, ExportUserData, DeleteUserData and DeleteMemory over
interactions spread across memory_interactions' partitions (migration 0018):
the history partition, two day partitions ahead, and the DEFAULT partition."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from google.protobuf import timestamp_pb2

from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAY = dt.timedelta(days=1)


def _spread() -> list[dt.datetime]:
    """Times landing in four partitions, two of them at one instant (ties go by id)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    return [
        now - 30 * DAY,  # memory_interactions_history
        now + DAY + dt.timedelta(hours=1),  # a day partition ahead
        now + 3 * DAY,
        now + 3 * DAY,
        now + 100 * DAY,  # beyond those created ahead: the DEFAULT partition
    ]


async def _interactions_at(
    database_url: str, memory: memory_pb2.Memory, times: list[dt.datetime]
) -> list[tuple[dt.datetime, int]]:
    """Interactions of `memory` at `times`, written as the owner; (time, id) of each."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            'INSERT INTO memory_interactions (memory_id, user_id, interaction_type, "timestamp")'
            " SELECT $1, $2::uuid, 'recall', t FROM unnest($3::timestamptz[]) t"
            ' RETURNING "timestamp", id',
            memory.id,
            memory.user_id,
            times,
        )
        partitions = await conn.fetchval(
            "SELECT count(DISTINCT tableoid) FROM memory_interactions WHERE memory_id = $1",
            memory.id,
        )
    finally:
        await conn.close()
    assert partitions == 4  # the store's own interaction shares the history partition
    return [(r["timestamp"], r["id"]) for r in rows]


async def _two_users(
    admin: admin_service_pb2_grpc.AdminServiceStub,
    memories: memory_service_pb2_grpc.MemoryServiceStub,
    database_url: str,
) -> tuple[memory_pb2.Memory, memory_pb2.Memory, list[tuple[dt.datetime, int]]]:
    alice = await register_user(admin, "alice@school.example.org")
    bob = await register_user(admin, "bob@school.example.org")
    mine = await store(memories, alice, "Alice teaches fractions.")
    theirs = await store(memories, bob, "Bob teaches decimals.")
    spread = await _interactions_at(database_url, mine, _spread())
    await _interactions_at(database_url, theirs, _spread())
    return mine, theirs, spread


async def _count(database_url: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


async def test_list_interactions_pages_across_partitions_newest_first(
    admin_stub, memory_stub, database_url
) -> None:
    mine, _, spread = await _two_users(admin_stub, memory_stub, database_url)
    seen: list[memory_pb2.Interaction] = []
    token = ""
    while True:
        page = await memory_stub.ListInteractions(
            memory_service_pb2.ListInteractionsRequest(
                user_id=mine.user_id, page_size=2, page_token=token
            )
        )
        assert len(page.interactions) <= 2
        seen.extend(page.interactions)
        if not (token := page.next_page_token):
            break
    listed = [(i.create_time.ToDatetime(dt.UTC), i.id) for i in seen]
    store_row = [(t, i) for t, i in listed if i not in {i for _, i in spread}]
    assert len(store_row) == 1 and {i.user_id for i in seen} == {mine.user_id}
    assert listed == sorted(spread + store_row, reverse=True)

    # A time range that spans two partitions, and one inside the DEFAULT partition.
    ordered = sorted(spread)
    times = [t for t, _ in ordered]
    ranged = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            user_id=mine.user_id,
            start_time=_timestamp(times[1]),
            end_time=_timestamp(times[4]),
        )
    )
    assert [i.id for i in ranged.interactions] == [i for _, i in reversed(ordered[1:4])]
    late = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            user_id=mine.user_id, start_time=_timestamp(times[4])
        )
    )
    assert [i.id for i in late.interactions] == [ordered[4][1]]


def _timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


async def test_export_and_erasure_cover_every_partition(
    admin_stub, memory_stub, database_url
) -> None:
    mine, theirs, spread = await _two_users(admin_stub, memory_stub, database_url)
    exported = [
        r.interaction.id
        async for r in admin_stub.ExportUserData(
            admin_service_pb2.ExportUserDataRequest(
                user_id=mine.user_id, format=admin_service_pb2.EXPORT_FORMAT_PROTOBUF
            )
        )
        if r.WhichOneof("record") == "interaction"
    ]
    assert set(exported) >= {i for _, i in spread} and len(exported) == len(spread) + 1

    erased = await admin_stub.DeleteUserData(
        admin_service_pb2.DeleteUserDataRequest(user_id=mine.user_id)
    )
    assert erased.interactions == len(spread) + 1
    remaining = "SELECT count(*) FROM memory_interactions WHERE user_id = $1::uuid"
    assert await _count(database_url, remaining, mine.user_id) == 0
    assert await _count(database_url, remaining, theirs.user_id) == len(spread) + 1


async def test_deleting_a_memory_removes_its_interactions_from_every_partition(
    memory_stub, admin_stub, database_url
) -> None:
    mine, theirs, spread = await _two_users(admin_stub, memory_stub, database_url)
    await memory_stub.DeleteMemory(memory_service_pb2.DeleteMemoryRequest(id=mine.id))
    remaining = "SELECT count(*) FROM memory_interactions WHERE memory_id = $1"
    assert await _count(database_url, remaining, mine.id) == 0
    assert await _count(database_url, remaining, theirs.id) == len(spread) + 1


async def test_the_server_runs_the_partition_job(app_url, database_url) -> None:
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    name = f"memory_interactions_p{today + 7 * DAY:%Y%m%d}"  # the last one kept ahead
    exists = "SELECT count(*) FROM pg_class WHERE relname = $1"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP TABLE {name}")
    finally:
        await conn.close()
    running = await start(TEST_SETTINGS.with_overrides(partition_interval_seconds=3600), app_url)
    try:
        for _ in range(100):  # its first run starts with the server
            if await _count(database_url, exists, name):
                break
            await asyncio.sleep(0.1)
    finally:
        await running.stop(1.0)
    assert await _count(database_url, exists, name) == 1
