"""Cache-aside storage of GetLesson results in Redis.

The cache is an optimisation only: every Redis failure (down, slow, full,
a corrupt entry) is logged and treated as a miss, so lessons are served from
PostgreSQL whenever Redis is unwell. To keep a sick Redis from slowing calls
down, each operation is bounded by `timeout_seconds` as a whole (connecting
included) and never retried (redis-py 8 would otherwise retry ten times with
backoff), and after a failure reads and fills skip Redis for
`PAUSE_SECONDS`: a GetLesson that found Redis frozen does not wait for it a
second time to fill the cache, so one call pays the budget at most once.
Invalidations are never skipped (a missed one would serve a stale lesson).

Invalidation writes a short-lived tombstone instead of deleting the key, and
`put` only writes where no key exists (SET NX). That closes the cache-aside
race in which a GetLesson reads the old row, an upsert commits and
invalidates, and the GetLesson then caches the old row for a whole TTL: its
late `put` now finds the tombstone and does nothing.

Values are JSON of the lesson row (never pickle: a cache must not be able to
run code in the service).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from datetime import date, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from memory_service.domain.models import Lesson, LessonStatus
from memory_service.telemetry import metrics

logger = logging.getLogger(__name__)

KEY_PREFIX = "faraday:lesson:v1:"

# Longer than any GetLesson can take between its database read and its put
# (the pool and statement timeouts are 30 s each by default). The price is
# that a changed lesson is served from PostgreSQL for this long.
TOMBSTONE_SECONDS = 90

_TOMBSTONE = b""

# After a failure, reads and fills leave Redis alone this long.
PAUSE_SECONDS = 1.0

# What a broken, slow or unreachable Redis raises. CancelledError is not
# here: a cancelled call must stay cancelled.
_CACHE_ERRORS = (RedisError, OSError, TimeoutError)

# Lesson fields whose Python type JSON cannot carry as is.
_DATES = ("week_of",)
_DATETIMES = ("created_at", "updated_at")


def key(lesson_id: int) -> str:
    return f"{KEY_PREFIX}{lesson_id}"


def encode(lesson: Lesson) -> bytes:
    row: dict[str, Any] = {f.name: getattr(lesson, f.name) for f in dataclasses.fields(Lesson)}
    row["user_id"] = str(lesson.user_id)
    row["status"] = lesson.status.value
    for name in (*_DATES, *_DATETIMES):
        value = row[name]
        row[name] = value.isoformat() if value is not None else None
    return json.dumps(row, separators=(",", ":")).encode()


def decode(raw: bytes | str) -> Lesson:
    """The lesson in `raw`; ValueError, KeyError or TypeError if it is not one."""
    row = json.loads(raw)
    row["user_id"] = uuid.UUID(row["user_id"])
    row["status"] = LessonStatus(row["status"])
    for name in _DATES:
        row[name] = date.fromisoformat(row[name]) if row[name] is not None else None
    for name in _DATETIMES:
        row[name] = datetime.fromisoformat(row[name]) if row[name] is not None else None
    return Lesson(**row)


class LessonCache:
    def __init__(self, url: str, ttl_seconds: int, timeout_seconds: float) -> None:
        self._ttl_seconds = ttl_seconds
        self._timeout_seconds = timeout_seconds
        self._paused_until = 0.0
        self._redis = aioredis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
        )

    def _paused(self) -> bool:
        return time.monotonic() < self._paused_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + PAUSE_SECONDS
        _log_failure(operation, exc)

    async def get(self, lesson_id: int) -> Lesson | None:
        if self._paused():
            metrics.cache_lookup("skipped")
            return None
        try:
            async with asyncio.timeout(self._timeout_seconds):
                raw: bytes | str | None = await self._redis.get(key(lesson_id))
        except _CACHE_ERRORS as exc:
            self._failed("get", exc)
            metrics.cache_lookup("error")
            return None
        if not raw:  # missing, or a tombstone
            metrics.cache_lookup("miss")
            return None
        try:
            lesson = decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            # An entry from an incompatible release, or damaged: a miss.
            _log_failure("decode", exc)
            metrics.cache_lookup("error")
            return None
        metrics.cache_lookup("hit")
        return lesson

    async def put(self, lesson: Lesson) -> None:
        assert lesson.id is not None
        if self._paused():
            return
        try:
            async with asyncio.timeout(self._timeout_seconds):
                await self._redis.set(key(lesson.id), encode(lesson), ex=self._ttl_seconds, nx=True)
        except _CACHE_ERRORS as exc:
            self._failed("put", exc)

    async def invalidate(self, *lesson_ids: int) -> None:
        """Mark the lessons changed. Call after the change has committed."""
        if not lesson_ids:
            return
        # One round trip however many lessons changed (a renamed subject can
        # touch thousands).
        pipe = self._redis.pipeline(transaction=False)
        for lesson_id in lesson_ids:
            pipe.set(key(lesson_id), _TOMBSTONE, ex=TOMBSTONE_SECONDS)
        try:
            async with asyncio.timeout(self._timeout_seconds):
                await pipe.execute()
        except _CACHE_ERRORS as exc:
            # The old entries stay until their TTL runs out: logged loudly
            # enough to explain stale reads, but the write itself succeeded.
            _log_failure(f"invalidate of {len(lesson_ids)} lessons", exc)

    async def close(self) -> None:
        await self._redis.aclose()


def _log_failure(operation: str, exc: BaseException) -> None:
    metrics.cache_error(operation.split()[0])  # "invalidate of 3 lessons": invalidate
    logger.warning("lesson cache %s failed: %s: %s", operation, type(exc).__name__, exc)
