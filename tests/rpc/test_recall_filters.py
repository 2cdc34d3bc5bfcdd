"""ListMemories' and RecallMemories' metadata, update-time and last-access filters,
recall's skip_access_tracking and its raised limit, over a real channel."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import memory_pb2, memory_service_pb2
from google.protobuf import struct_pb2, timestamp_pb2

from memory_service.domain import validation
from tests.rpc.helpers import field_violations, recalls_written, register_user
from tests.rpc.memory_helpers import store

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIME_FIELDS = (
    "update_time_start",
    "update_time_end",
    "last_access_time_start",
    "last_access_time_end",
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def _ts(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


async def _recalled(stub, user: str, **fields: Any) -> list[int]:
    response = await stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, **fields)
    )
    return [s.memory.id for s in response.memories]


async def _listed(stub, user: str, **fields: Any) -> list[int]:
    response = await stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user, **fields)
    )
    return [m.id for m in response.memories]


async def _both(stub, user: str, **fields: Any) -> set[int]:
    """The ids recall and listing return for the same filters; they must agree."""
    recalled = await _recalled(stub, user, skip_access_tracking=True, limit=500, **fields)
    listed = await _listed(stub, user, page_size=500, **fields)
    assert sorted(recalled) == sorted(listed), fields
    return set(listed)


async def _set_times(database_url: str, rows: dict[int, tuple[datetime, datetime | None]]) -> None:
    """Give memories an update time and a last-access time (None: never accessed)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            "UPDATE user_memories SET updated_at = $2, last_accessed = $3 WHERE id = $1",
            [(memory_id, updated, accessed) for memory_id, (updated, accessed) in rows.items()],
        )
    finally:
        await conn.close()


async def test_metadata_filter_is_json_containment(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    other = await register_user(admin_stub)
    a = await store(
        memory_stub, user, "a", metadata=_struct({"source": "import", "unit": {"id": 7, "n": 1}})
    )
    b = await store(
        memory_stub, user, "b", metadata=_struct({"source": "chat", "tags": ["x", "y", "z"]})
    )
    c = await store(memory_stub, user, "c")  # no metadata
    await store(memory_stub, other, "not mine", metadata=_struct({"source": "import"}))

    assert await _both(memory_stub, user, metadata_filter=_struct({"source": "import"})) == {a.id}
    assert await _both(memory_stub, user, metadata_filter=_struct({"unit": {"id": 7}})) == {a.id}
    assert await _both(memory_stub, user, metadata_filter=_struct({"tags": ["z", "x"]})) == {b.id}
    assert await _both(memory_stub, user, metadata_filter=_struct({"tags": ["q"]})) == set()
    # Numbers compare as numbers (Struct sends every number as a double).
    assert await _both(memory_stub, user, metadata_filter=_struct({"unit": {"n": 1.0}})) == {a.id}
    # Every key must match.
    both_keys = _struct({"source": "import", "unit": {"id": 8}})
    assert await _both(memory_stub, user, metadata_filter=both_keys) == set()
    # An empty filter is no filter.
    assert await _both(memory_stub, user, metadata_filter=_struct({})) == {a.id, b.id, c.id}
    # With a query too: the lexical paths see the filter as well.
    assert await _recalled(
        memory_stub, user, query="a b c", metadata_filter=_struct({"source": "chat"})
    ) == [b.id]


async def test_update_time_filters(memory_stub, admin_stub, database_url) -> None:
    user = await register_user(admin_stub)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = [(await store(memory_stub, user, f"m{i}")).id for i in range(3)]
    days = [30, 10, 1]
    await _set_times(
        database_url, {i: (now - timedelta(days=d), None) for i, d in zip(ids, days, strict=True)}
    )
    old, mid, new = ids
    ten_days_ago = _ts(now - timedelta(days=10))
    assert await _both(memory_stub, user, update_time_start=ten_days_ago) == {mid, new}
    assert await _both(memory_stub, user, update_time_end=ten_days_ago) == {old}  # exclusive
    assert await _both(
        memory_stub,
        user,
        update_time_start=_ts(now - timedelta(days=20)),
        update_time_end=_ts(now - timedelta(days=5)),
    ) == {mid}
    # Start at or after end: nothing, not an error.
    assert (
        await _both(memory_stub, user, update_time_start=ten_days_ago, update_time_end=ten_days_ago)
        == set()
    )


async def test_last_access_time_filters_count_never_accessed_as_before_every_time(
    memory_stub, admin_stub, database_url, server
) -> None:
    user = await register_user(admin_stub)
    now = datetime.now(UTC).replace(microsecond=0)
    never, stale, fresh = [(await store(memory_stub, user, f"m{i}")).id for i in range(3)]
    await _set_times(
        database_url,
        {
            never: (now, None),
            stale: (now, now - timedelta(days=40)),
            fresh: (now, now - timedelta(hours=1)),
        },
    )
    month_ago = _ts(now - timedelta(days=30))
    # Not recalled in 30 days: the stale one and the one never recalled.
    assert await _both(memory_stub, user, last_access_time_end=month_ago) == {never, stale}
    assert await _both(memory_stub, user, last_access_time_start=month_ago) == {fresh}
    assert await _both(
        memory_stub,
        user,
        last_access_time_start=_ts(now - timedelta(days=50)),
        last_access_time_end=month_ago,
    ) == {stale}
    # Start inclusive, end exclusive, to the microsecond.
    exact = _ts(now - timedelta(hours=1))
    assert await _both(memory_stub, user, last_access_time_start=exact) == {fresh}
    assert fresh not in await _both(memory_stub, user, last_access_time_end=exact)
    # Recall filters on the access times as they were before it bumped them.
    first = await _recalled(memory_stub, user, last_access_time_end=month_ago)
    assert sorted(first) == sorted([never, stale])
    await recalls_written(server)
    assert await _both(memory_stub, user, last_access_time_end=month_ago) == set()


async def test_list_pages_with_filters_and_binds_tokens_to_them(
    memory_stub, admin_stub, database_url
) -> None:
    user = await register_user(admin_stub)
    now = datetime.now(UTC).replace(microsecond=0)
    kept = []
    for i in range(9):
        memory = await store(
            memory_stub, user, f"m{i}", metadata=_struct({"unit": i % 2, "extra": i})
        )
        if i % 2:
            kept.append(memory.id)
    # One matching memory last changed before the time filter's start.
    await _set_times(database_url, {kept.pop(0): (now - timedelta(days=3), None)})
    filters: dict[str, Any] = {
        "metadata_filter": _struct({"unit": 1}),
        "update_time_start": _ts(now - timedelta(days=2)),
        "last_access_time_end": _ts(now),
    }
    seen, token, pages = [], "", 0
    while True:
        page = await memory_stub.ListMemories(
            memory_service_pb2.ListMemoriesRequest(
                user_id=user, page_size=2, page_token=token, **filters
            )
        )
        seen += [m.id for m in page.memories]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted(kept, reverse=True) and pages == 2
    first = await memory_stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(user_id=user, page_size=1, **filters)
    )
    assert first.next_page_token
    # The token belongs to these filters: any change to one of them is refused.
    changed: list[dict[str, Any]] = [
        filters | {"metadata_filter": _struct({"unit": 0})},
        {k: v for k, v in filters.items() if k != "metadata_filter"},
        filters | {"update_time_start": _ts(now - timedelta(days=3))},
        {k: v for k, v in filters.items() if k != "update_time_start"},
        filters | {"update_time_end": _ts(now + timedelta(days=1))},
        filters | {"last_access_time_start": _ts(now - timedelta(days=1))},
        filters | {"last_access_time_end": _ts(now + timedelta(seconds=1))},
    ]
    for fields in changed:
        request = memory_service_pb2.ListMemoriesRequest(
            user_id=user, page_size=1, page_token=first.next_page_token, **fields
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await memory_stub.ListMemories(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(info.value) == ["page_token"]
    # The same filters (a Struct's keys in another order) continue.
    same = filters | {"metadata_filter": _struct({"unit": 1})}
    again = await memory_stub.ListMemories(
        memory_service_pb2.ListMemoriesRequest(
            user_id=user, page_size=1, page_token=first.next_page_token, **same
        )
    )
    assert [m.id for m in again.memories] == [sorted(kept, reverse=True)[1]]


def _nested(levels: int) -> dict[str, Any]:
    """An object `levels` deep, the outer one included."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def _sized(size: int) -> dict[str, Any]:
    """An object of exactly `size` bytes as compact JSON."""
    value = {"k": ""}
    value["k"] = "x" * (size - len(json.dumps(value, separators=(",", ":"))))
    assert len(json.dumps(value, separators=(",", ":"))) == size
    return value


async def test_metadata_filter_limits(memory_stub, admin_stub) -> None:
    user = await register_user(admin_stub)
    m = await store(memory_stub, user, "deep", metadata=_struct(_nested(8)))
    limit = validation.JSON_FILTER_MAX_BYTES
    assert await _both(memory_stub, user, metadata_filter=_struct(_nested(8))) == {m.id}
    assert await _both(memory_stub, user, metadata_filter=_struct(_sized(limit))) == set()
    # A list counts as a level too.
    assert await _both(memory_stub, user, metadata_filter=_struct({"a": [[[[[[[1]]]]]]]})) == set()
    too_deep_list = _struct({"a": [[[[[[[[1]]]]]]]]})
    for bad in (
        _struct(_nested(9)),
        too_deep_list,
        _struct(_sized(limit + 1)),
        _struct({"n": float("nan")}),
        _struct({"bad\x00key": 1}),
        _struct({"k": "nul\x00"}),
    ):
        for call in (
            memory_stub.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(user_id=user, metadata_filter=bad)
            ),
            memory_stub.ListMemories(
                memory_service_pb2.ListMemoriesRequest(user_id=user, metadata_filter=bad)
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(info.value) == ["metadata_filter"], info.value.details()


@pytest.mark.parametrize("field", TIME_FIELDS)
async def test_bad_filter_times_name_the_field(memory_stub, admin_stub, field) -> None:
    user = await register_user(admin_stub)
    for bad in (
        timestamp_pb2.Timestamp(seconds=-1),
        timestamp_pb2.Timestamp(seconds=int(datetime(9000, 1, 1, tzinfo=UTC).timestamp())),
        timestamp_pb2.Timestamp(seconds=0, nanos=-1),
    ):
        for call in (
            memory_stub.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(user_id=user, **{field: bad})
            ),
            memory_stub.ListMemories(
                memory_service_pb2.ListMemoriesRequest(user_id=user, **{field: bad})
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(info.value) == [field], info.value.details()


async def _recall_interactions(stub, user: str) -> int:
    logged = await stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            user_id=user, type=memory_pb2.INTERACTION_TYPE_RECALL
        )
    )
    return len(logged.interactions)


async def test_skip_access_tracking_logs_nothing_and_leaves_last_access_time(
    memory_stub, admin_stub, server
) -> None:
    user = await register_user(admin_stub)
    never = await store(memory_stub, user, "lesson timing preference", importance=0.9)
    seen = await store(memory_stub, user, "lesson format preference", importance=0.3)
    await _recalled(memory_stub, user, query="format", limit=1)  # seen only: bumped, logged
    await recalls_written(server)
    before = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=seen.id))
    assert before.HasField("last_access_time") and await _recall_interactions(memory_stub, user)
    logged = await _recall_interactions(memory_stub, user)
    for query in ("", "lesson"):
        got = await memory_stub.RecallMemories(
            memory_service_pb2.RecallMemoriesRequest(
                user_id=user, query=query, skip_access_tracking=True
            )
        )
        assert {s.memory.id for s in got.memories} == {never.id, seen.id}
    assert await _recall_interactions(memory_stub, user) == logged
    after_never = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=never.id))
    after_seen = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=seen.id))
    assert not after_never.HasField("last_access_time")
    assert after_seen.last_access_time == before.last_access_time
    # Without the switch the same recall logs and bumps.
    await _recalled(memory_stub, user, query="lesson")
    await recalls_written(server)
    assert await _recall_interactions(memory_stub, user) == logged + 2
    bumped = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=never.id))
    assert bumped.HasField("last_access_time")


async def test_recall_returns_up_to_500(memory_stub, admin_stub, database_url) -> None:
    user = await register_user(admin_stub)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table(
            "user_memories",
            records=[(user, f"note {i}", "fact", i / 600) for i in range(600)],
            columns=["user_id", "content", "category", "importance"],
        )
    finally:
        await conn.close()
    got = await memory_stub.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, limit=500)
    )
    assert len(got.memories) == 500
    assert await _recall_interactions(memory_stub, user) == 50  # a page of ListInteractions
    scores = [s.score for s in got.memories]
    assert scores == sorted(scores, reverse=True)
