"""Per-caller token buckets against a real Redis, and without one."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from memory_service.domain.token_bucket import BucketState, take
from memory_service.storage import rate_limit
from memory_service.storage.rate_limit import (
    TAKE_SCRIPT,
    RateLimiter,
    redis_key,
    refill_milliseconds,
)
from tests.conftest import free_port, redis_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIMEOUT = 0.05
# Slow enough that no token comes back while a test runs.
SLOW = 0.01


def caller() -> str:
    """A caller of its own per test: no flushing of a Redis others may use."""
    return f"user:{uuid.uuid4()}"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def limiters(redis_url: str) -> AsyncIterator[Any]:
    """Make limiters on the test Redis; all closed at the end."""
    made: list[RateLimiter] = []

    def make(
        rate: float, burst: int, url: str | None = redis_url, timeout: float = TIMEOUT
    ) -> RateLimiter:
        limiter = RateLimiter(rate, burst, url, timeout)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


async def checks(limiter: RateLimiter, key: str, n: int) -> list[float]:
    return [await limiter.check(key) for _ in range(n)]


async def test_burst_is_allowed_then_the_caller_waits(limiters: Any) -> None:
    limiter = limiters(1.0, 3)
    key = caller()
    waits = await checks(limiter, key, 4)
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0.9 < waits[3] <= 1.0


async def test_the_bucket_refills_after_the_wait(limiters: Any) -> None:
    limiter = limiters(20.0, 1)
    key = caller()
    assert await limiter.check(key) == 0.0
    wait = await limiter.check(key)
    assert 0.0 < wait <= 0.05
    await asyncio.sleep(wait + 0.02)
    assert await limiter.check(key) == 0.0


async def test_two_servers_share_one_bucket(limiters: Any) -> None:
    first, second = limiters(SLOW, 4), limiters(SLOW, 4)
    key = caller()
    for _ in range(2):
        assert await first.check(key) == 0.0
        assert await second.check(key) == 0.0
    assert await first.check(key) > 0.0
    assert await second.check(key) > 0.0


async def test_concurrent_checks_take_exactly_the_burst(limiters: Any) -> None:
    # The script reads, refills and writes atomically: no lost updates. (A
    # generous timeout: a cold pool opening its connections at once can take
    # longer than 50 ms, and a check that times out is limited in process.)
    servers = [limiters(SLOW, 10, timeout=2.0) for _ in range(3)]
    key = caller()
    waits = await asyncio.gather(*(servers[i % 3].check(key) for i in range(60)))
    assert sum(w == 0.0 for w in waits) == 10


async def test_callers_have_their_own_buckets(limiters: Any) -> None:
    limiter = limiters(SLOW, 1)
    alice, bob = caller(), caller()
    assert await limiter.check(alice) == 0.0
    assert await limiter.check(alice) > 0.0
    assert await limiter.check(bob) == 0.0


async def test_buckets_expire_once_they_would_be_full(
    limiters: Any, client: aioredis.Redis
) -> None:
    limiter = limiters(2.0, 10)
    key = caller()
    await limiter.check(key)
    name = redis_key(key)
    assert (
        name.startswith("faraday:ratelimit:v1:") and len(name) == len("faraday:ratelimit:v1:") + 32
    )
    assert key.encode() not in name.encode()
    ttl = await client.pttl(name)
    assert 0 < ttl <= refill_milliseconds(2.0, 10) == 6000


STEPS = [  # (seconds from the start, cost); the clock jumps back at 0.5 and -1.0
    (0.0, 1.0), (0.0, 2.0), (0.0, 2.0), (0.0, 1.0), (0.1, 1.0),
    (0.7, 1.0), (0.5, 1.0), (-1.0, 1.0), (1.0, 1.0), (3.2, 3.0),
    (3.25, 1.0), (900.0, 5.0), (900.0, 0.5), (900.01, 1.0),
]  # fmt: skip
_rng = random.Random(15)
# A clock that mostly moves on and sometimes back: running sums of -0.2..1.0 s.
RANDOM_STEPS = list(
    zip(
        itertools.accumulate(_rng.uniform(-0.2, 1.0) for _ in range(200)),
        (_rng.choice((0.5, 1.0, 2.0)) for _ in range(200)),
        strict=True,
    )
)


@pytest.mark.parametrize("start", [100.0, 1_800_000_000.123456])  # the latter: a Redis TIME
@pytest.mark.parametrize("steps", [STEPS, RANDOM_STEPS], ids=["chosen", "random"])
async def test_the_script_does_the_arithmetic_of_domain_take(
    client: aioredis.Redis, start: float, steps: list[tuple[float, float]]
) -> None:
    rate, burst, ttl = 3.0, 5, 10_000
    name = redis_key(caller())
    state: BucketState | None = None
    for offset, cost in steps:
        now = start + offset
        state, wait = take(state, now, rate, burst, cost)
        reply = await client.eval(
            TAKE_SCRIPT, 1, name, repr(rate), burst, repr(cost), ttl, repr(now)
        )
        # Exactly equal: the same IEEE operations in the same order.
        assert [float(x) for x in reply] == [wait, state.tokens, state.updated_at], (now, cost)
    await client.delete(name)


async def test_the_script_uses_the_redis_clock(client: aioredis.Redis) -> None:
    name = redis_key(caller())
    seconds, micros = await client.time()
    reply = await client.eval(TAKE_SCRIPT, 1, name, "1", 5, "1", 10_000, "")
    assert float(reply[1]) == 4.0
    assert 0 <= float(reply[2]) - (seconds + micros / 1e6) < 1.0
    await client.delete(name)


async def test_a_closed_port_falls_back_to_limiting_in_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = RateLimiter(SLOW, 2, f"redis://127.0.0.1:{free_port()}/0", TIMEOUT)
    key = caller()
    try:
        with caplog.at_level(logging.WARNING, logger=rate_limit.__name__):
            waits = []
            for _ in range(3):
                started = time.monotonic()
                waits.append(await limiter.check(key))
                assert time.monotonic() - started < 0.5
    finally:
        await limiter.close()
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 0.0
    assert len(caplog.records) == 1
    assert "Redis failed" in caplog.records[0].getMessage()


async def test_failures_are_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_limit, "_REDIS_PAUSE_SECONDS", 0.0)  # try Redis every time
    limiter = RateLimiter(1.0, 100, f"redis://127.0.0.1:{free_port()}/0", TIMEOUT)
    try:
        with caplog.at_level(logging.WARNING, logger=rate_limit.__name__):
            for _ in range(5):
                assert await limiter.check(caller()) == 0.0
    finally:
        await limiter.close()
    assert len(caplog.records) == 1


async def test_a_frozen_redis_costs_at_most_the_timeout_and_is_used_again_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rate_limit, "_REDIS_PAUSE_SECONDS", 0.3)
    with redis_server() as (url, proc):
        limiter = RateLimiter(SLOW, 3, url, TIMEOUT)
        other = RateLimiter(SLOW, 3, url, TIMEOUT)
        key = caller()
        try:
            assert await limiter.check(key) == 0.0  # in Redis: 2 left
            proc.send_signal(signal.SIGSTOP)
            try:
                for _ in range(3):  # in process: 3 left, then 2, 1, 0
                    started = time.monotonic()
                    assert await limiter.check(key) == 0.0
                    assert time.monotonic() - started < 0.5
                assert await limiter.check(key) > 0.0
            finally:
                proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.35)
            # The check that timed out may still have taken its token once
            # Redis woke up (like a write whose reply was lost); start afresh.
            async with aioredis.from_url(url) as client:
                await client.delete(redis_key(key))
            # Both are back on the shared bucket: `limiter`'s own is empty,
            # and `other`'s own would still allow calls.
            assert await checks(limiter, key, 3) == [0.0] * 3
            assert await other.check(key) > 0.0
        finally:
            await limiter.close()
            await other.close()


async def test_without_redis_buckets_live_in_process(limiters: Any) -> None:
    limiter = limiters(SLOW, 2, None)
    alice, bob = caller(), caller()
    assert await checks(limiter, alice, 2) == [0.0, 0.0]
    assert await limiter.check(alice) > 0.0
    assert await limiter.check(bob) == 0.0


async def test_in_process_buckets_are_bounded() -> None:
    limiter = RateLimiter(SLOW, 1, None, TIMEOUT, max_local_buckets=2)
    a, b, c = caller(), caller(), caller()
    for key in (a, b, a, c):  # c pushes out b, the least recently used
        await limiter.check(key)
    assert await limiter.check(a) > 0.0
    assert await limiter.check(c) > 0.0
    assert await limiter.check(b) == 0.0  # forgotten: a full bucket again
    await limiter.close()


async def test_a_disabled_limiter_does_no_io(redis_url: str, client: aioredis.Redis) -> None:
    # No Redis round trips: a thousand checks against a closed port take no
    # time, and against a real Redis they leave no bucket behind.
    key = caller()
    for url in (redis_url, f"redis://127.0.0.1:{free_port()}/0", None):
        limiter = RateLimiter(0.0, 0, url, TIMEOUT)
        assert not limiter.enabled
        started = time.monotonic()
        assert await checks(limiter, key, 1000) == [0.0] * 1000
        assert time.monotonic() - started < 0.5
        await limiter.close()
    assert not await client.exists(redis_key(key))


async def test_enabled_with_no_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(5.0, 0, None, TIMEOUT)
