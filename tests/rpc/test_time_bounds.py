"""Every time a caller can send is bounded to [1970-01-01, 9000-01-01) and round-trips.

Before the bound, expire_time 9999-12-31T23:59:59.999999Z was written by
asyncpg as PostgreSQL's `infinity`, the call answered INTERNAL after the row
committed, and every later read of that user's memories answered INTERNAL
too. Here each RPC that takes a time gets the bounds, values one microsecond
and one nanosecond outside them and protobuf's own extremes; afterwards the
user's memories must still read.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    lesson_service_pb2,
    memory_pb2,
    memory_service_pb2,
)
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.type import date_pb2

from memory_service.domain import page_token
from memory_service.rpc import memory_messages
from tests.rpc.helpers import field_violations, register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

END_SECONDS = int(datetime(9000, 1, 1, tzinfo=UTC).timestamp())


def ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


MINIMUM = ts(0)
MAXIMUM = ts(END_SECONDS - 1, 999_999_000)  # 8999-12-31T23:59:59.999999Z
MAXIMUM_NANOS = ts(END_SECONDS - 1, 999_999_999)  # read back truncated to the microsecond
OUTSIDE = {
    "1 µs before the minimum": ts(-1, 999_999_000),
    "1 ns before the minimum": ts(-1, 999_999_999),
    "1 µs after the maximum (the end itself)": ts(END_SECONDS),
    "1 ns after 8999-12-31T23:59:59.999999999Z": ts(END_SECONDS, 1),
    "protobuf's minimum 0001-01-01T00:00:00Z": ts(-62135596800),
    "protobuf's maximum 9999-12-31T23:59:59.999999999Z": ts(253402300799, 999_999_999),
    "9999-12-31T23:59:59.999999Z (was stored as infinity)": ts(253402300799, 999_999_000),
}
DATES_INSIDE = [
    date_pb2.Date(year=1970, month=1, day=1),
    date_pb2.Date(year=8999, month=12, day=31),
]
DATES_OUTSIDE = [
    date_pb2.Date(year=1969, month=12, day=31),
    date_pb2.Date(year=9000, month=1, day=1),
    date_pb2.Date(year=1, month=1, day=1),
    date_pb2.Date(year=9999, month=12, day=31),
]


async def _invalid(call: object, field: str, label: object = "") -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (label, info.value.details())
    assert field_violations(info.value) == [field], (label, info.value.details())


async def _user_still_reads(memory_stub, admin_stub, user: str, memory_id: int) -> None:
    await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory_id))
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert memory_id in [m.id for m in listed.memories]
    await memory_stub.RecallMemories(memory_service_pb2.RecallMemoriesRequest(user_id=user))
    export = admin_stub.ExportUserData(admin_service_pb2.ExportUserDataRequest(user_id=user))
    assert len([record async for record in export]) > 1


async def test_expire_time_round_trips_inside_and_is_refused_outside(
    memory_stub, admin_stub
) -> None:
    user = await register_user(admin_stub)
    for expire in (MAXIMUM, MAXIMUM_NANOS):
        stored = await store(memory_stub, user, expire_time=expire)
        got = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=stored.id))
        assert stored.expire_time == got.expire_time == MAXIMUM  # exact to the microsecond
    # The minimum is in range but in the past, which expire_time refuses too.
    await _invalid(store(memory_stub, user, expire_time=MINIMUM), "memory.expire_time")
    for label, value in OUTSIDE.items():
        await _invalid(store(memory_stub, user, expire_time=value), "memory.expire_time", label)
        update = memory_service_pb2.UpdateMemoryRequest(
            memory=memory_pb2.Memory(id=stored.id, expire_time=value),
            update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
        )
        await _invalid(memory_stub.UpdateMemory(update), "memory.expire_time", label)
    update = memory_service_pb2.UpdateMemoryRequest(
        memory=memory_pb2.Memory(id=stored.id, expire_time=MAXIMUM_NANOS),
        update_mask=field_mask_pb2.FieldMask(paths=["expire_time"]),
    )
    assert (await memory_stub.UpdateMemory(update)).expire_time == MAXIMUM
    await _user_still_reads(memory_stub, admin_stub, user, stored.id)


async def test_recall_and_interaction_time_filters(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user)
    for start, end in [(MINIMUM, MAXIMUM), (MINIMUM, MAXIMUM_NANOS)]:
        recalled = await memory_stub.RecallMemories(
            memory_service_pb2.RecallMemoriesRequest(
                user_id=user, create_time_start=start, create_time_end=end
            )
        )
        assert [s.memory.id for s in recalled.memories] == [stored.id]
        interactions = await memory_stub.ListInteractions(
            memory_service_pb2.ListInteractionsRequest(user_id=user, start_time=start, end_time=end)
        )
        assert interactions.interactions
    shared = (
        "update_time_start",
        "update_time_end",
        "last_access_time_start",
        "last_access_time_end",
    )
    for start, end in [(MINIMUM, MAXIMUM), (MINIMUM, MAXIMUM_NANOS)]:
        for field in shared:
            bound = start if field.endswith("start") else end
            recalled = await memory_stub.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(
                    user_id=user, skip_access_tracking=True, **{field: bound}
                )
            )
            listed = await memory_stub.ListMemories(
                memory_service_pb2.ListMemoriesRequest(user_id=user, **{field: bound})
            )
            expected = [] if field == "last_access_time_start" else [stored.id]
            if field == "last_access_time_start" and bound == MINIMUM:
                expected = [stored.id]  # recalled above: accessed since 1970
            assert [s.memory.id for s in recalled.memories] == expected, field
            assert [m.id for m in listed.memories] == expected, field
    for label, value in OUTSIDE.items():
        for field in ("create_time_start", "create_time_end", *shared):
            request = memory_service_pb2.RecallMemoriesRequest(user_id=user, **{field: value})
            await _invalid(memory_stub.RecallMemories(request), field, label)
        for field in shared:
            listing = memory_service_pb2.ListMemoriesRequest(user_id=user, **{field: value})
            await _invalid(memory_stub.ListMemories(listing), field, label)
        for field in ("start_time", "end_time"):
            listing = memory_service_pb2.ListInteractionsRequest(user_id=user, **{field: value})
            await _invalid(memory_stub.ListInteractions(listing), field, label)
    await _user_still_reads(memory_stub, admin_stub, user, stored.id)


async def test_page_tokens_carry_only_times_in_range(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    stored = await store(memory_stub, user)
    memories = memory_service_pb2.ListMemoriesRequest(user_id=user)
    interactions = memory_service_pb2.ListInteractionsRequest(user_id=user)
    filters = {
        "ListMemories": asdict(memory_messages.memory_filter(memories)),
        "ListInteractions": asdict(memory_messages.interaction_filter(interactions)),
    }
    calls = {"ListMemories": memories, "ListInteractions": interactions}
    inside = [datetime(1970, 1, 1, tzinfo=UTC), datetime(8999, 12, 31, 23, 59, 59, 999999, UTC)]
    outside = [
        datetime(1970, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
        datetime(9000, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, UTC),  # what asyncpg sends as infinity
    ]
    for name, request in calls.items():
        method = getattr(memory_stub, name)
        for moment in inside + outside:
            request.page_token = page_token.encode_time_and_id(moment, 2**62, filters[name])
            if moment in inside:
                await method(request)
            else:
                await _invalid(method(request), "page_token", moment)
    await _user_still_reads(memory_stub, admin_stub, user, stored.id)


async def test_lesson_dates_round_trip_inside_and_are_refused_outside(
    admin_stub, lesson_stub
) -> None:
    user = await register_user(admin_stub)
    for week_of in DATES_INSIDE:
        lesson = await admin_stub.UpsertLesson(
            admin_service_pb2.UpsertLessonRequest(
                lesson=lesson_pb2.Lesson(title="Fractions", user_id=user, week_of=week_of)
            )
        )
        got = await lesson_stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson.id))
        assert lesson.week_of == got.week_of == week_of
        listed = await lesson_stub.ListLessons(
            lesson_service_pb2.ListLessonsRequest(
                user_id=user, week_of_start=week_of, week_of_end=week_of
            )
        )
        assert [item.id for item in listed.lessons] == [lesson.id]
    for week_of in DATES_OUTSIDE:
        upsert = admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(title="Fractions", user_id=user, week_of=week_of)
        )
        await _invalid(admin_stub.UpsertLesson(upsert), "lesson.week_of", week_of)
        for field in ("week_of_start", "week_of_end"):
            listing = lesson_service_pb2.ListLessonsRequest(user_id=user, **{field: week_of})
            await _invalid(lesson_stub.ListLessons(listing), field, week_of)
