"""A cached lesson must not answer the wrong caller faster than a missing one.

Otherwise the lesson cache is an oracle: a user could time GetLesson on
another user's draft ids and learn which exist (and are being read). The
server here has the Redis lesson cache and user JWTs. Alice's draft is
cached; Bob asks for it and for an id that does not exist.

Timing on loopback is noisy (the medians are printed), so the test checks the
cause instead: Bob's answer for the cached draft must take the same database
read as his answer for a missing lesson. While the owner holds a lock on
`lessons`, both must wait for it and run into Bob's deadline. Before the fix
the cached draft's NOT_FOUND came straight from Redis, without waiting.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    registry_pb2,
)

from memory_service.auth import token_hash
from memory_service.server import start
from memory_service.storage.cache import key
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.test_auth import AUDIENCE, ISSUER, SECRET, bearer, user_jwt

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUNDS = 150


@pytest.fixture
async def channel(app_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[tuple]:
    admin_token = f"fmt_admin_{uuid.uuid4().hex}"
    path = tmp_path / "tokens.json"
    entry = {"name": "admin", "sha256": token_hash(admin_token), "scopes": ["admin"]}
    path.write_text(json.dumps({"tokens": [entry]}))
    settings = TEST_SETTINGS.with_overrides(
        redis_url=redis_url,
        service_tokens_file=path,
        jwt_hs256_secret=SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            yield ch, admin_token
    finally:
        await running.stop(1.0)


async def _not_found_ms(
    stub: lesson_service_pb2_grpc.LessonServiceStub, lesson_id: int, metadata
) -> float:
    began = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson_id), metadata=metadata)
    took = (time.perf_counter() - began) * 1000
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    return took


async def test_a_cached_draft_answers_the_wrong_caller_as_slowly_as_a_missing_lesson(
    channel, database_url: str, redis_url: str
) -> None:
    ch, admin_token = channel
    admin = admin_service_pb2_grpc.AdminServiceStub(ch)
    lessons = lesson_service_pb2_grpc.LessonServiceStub(ch)
    alice, bob = [
        (
            await admin.UpsertUser(
                admin_service_pb2.UpsertUserRequest(
                    user=registry_pb2.User(email=f"{name}-{uuid.uuid4().hex[:6]}@school.example")
                ),
                metadata=bearer(admin_token),
            )
        ).id
        for name in ("alice", "bob")
    ]
    draft = await admin.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(title="Draft", user_id=alice)
        ),
        metadata=bearer(admin_token),
    )
    as_alice, as_bob = bearer(user_jwt(alice)), bearer(user_jwt(bob))
    # Saving the lesson left a tombstone (storage/cache.py); clear it so that
    # Alice's read caches the draft.
    redis = aioredis.from_url(redis_url)
    try:
        await redis.delete(key(draft.id))
        await lessons.GetLesson(lesson_service_pb2.GetLessonRequest(id=draft.id), metadata=as_alice)
        assert await redis.get(key(draft.id)), "the draft did not get cached"
    finally:
        await redis.aclose()

    cached, missing = [], []
    for _ in range(ROUNDS):
        cached.append(await _not_found_ms(lessons, draft.id, as_bob))
        missing.append(await _not_found_ms(lessons, draft.id + 10_000, as_bob))
    ratio = statistics.median(cached) / statistics.median(missing)
    print(
        f"\nwrong caller, NOT_FOUND p50: cached draft {statistics.median(cached):.2f} ms,"
        f" missing lesson {statistics.median(missing):.2f} ms, ratio {ratio:.2f}"
    )

    owner = await asyncpg.connect(database_url)
    try:
        async with owner.transaction():
            await owner.execute("LOCK TABLE lessons IN ACCESS EXCLUSIVE MODE")
            codes = []
            for lesson_id in (draft.id, draft.id + 10_000):
                call = lessons.GetLesson(
                    lesson_service_pb2.GetLessonRequest(id=lesson_id), metadata=as_bob, timeout=0.3
                )
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await call
                codes.append(error.value.code())
            await asyncio.sleep(0)
    finally:
        await owner.close()
    # Both waited for the database: a cached draft is not told apart.
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
