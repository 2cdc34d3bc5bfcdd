"""Per-caller rate limiting: token buckets in Redis, or in this process.

With a Redis URL every caller has one bucket in Redis, shared by all server
processes: one Lua script reads it, refills it by Redis's own clock (TIME, so
the processes' clocks never disagree), takes a token and writes it back, all
atomically. Buckets expire once they would be full again, so idle callers
cost nothing.

Limiting must never make the service less available than it would be
without it. So, like the lesson cache, the client times out connecting and
each command after `timeout_seconds` and never retries (redis-py 8 would
otherwise retry for about a minute against a frozen Redis), the whole check
is bounded by the same deadline, and any Redis failure falls back to an
in-process bucket with the same arithmetic. During such an outage each
process limits on its own, so a caller may get one burst and one rate per
process, and a check that timed out may still take its token in Redis once
Redis catches up (stricter, never looser). After a failure Redis is left
alone for `_REDIS_PAUSE_SECONDS`, so that a frozen Redis does not add its
timeout to every call; a warning is logged at most once per
`_WARN_INTERVAL_SECONDS`.

Without a Redis URL only in-process buckets are used, for at most
`max_local_buckets` callers (least recently used dropped first; a dropped
bucket is a full one, as an expired one is in Redis).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections import OrderedDict

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from memory_service.domain.token_bucket import BucketState, take

logger = logging.getLogger(__name__)

KEY_PREFIX = "faraday:ratelimit:v1:"

# Every call costs one token.
_COST = 1.0

# After a Redis failure, use only the in-process buckets for this long: a
# frozen Redis would otherwise add its whole timeout to every call.
_REDIS_PAUSE_SECONDS = 1.0
_WARN_INTERVAL_SECONDS = 30.0
# A script runs in microseconds, so a few connections serve many checks.
_MAX_CONNECTIONS = 50

# What a broken, slow or unreachable Redis raises (a failing script raises
# ResponseError, a RedisError). CancelledError is not here: a cancelled call
# must stay cancelled.
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)

DEFAULT_MAX_LOCAL_BUCKETS = 100_000

# The arithmetic of memory_service/domain/token_bucket.py `take`, line for
# line; tests/storage/test_rate_limit.py checks they agree. Change both
# together.
#
# KEYS[1]  the caller's bucket (a hash: tokens, updated_at)
# ARGV[1]  rate per second     ARGV[2]  burst     ARGV[3]  cost
# ARGV[4]  TTL in milliseconds (the time an empty bucket takes to refill)
# ARGV[5]  "" to use Redis's clock; a time in seconds for the agreement test
# Returns {wait, tokens, updated_at} as strings: Redis would truncate a Lua
# number in a reply to an integer. Numbers are written with %.17g for the
# same reason (older Redis versions store them with 14 digits only).
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  -- Redis before 5 refuses writes after TIME unless effects are replicated.
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local stored = redis.call('HMGET', KEYS[1], 'tokens', 'updated_at')
local tokens = tonumber(stored[1])
local updated_at = tonumber(stored[2])
if tokens == nil or updated_at == nil then
  -- No bucket (or a damaged one): a full bucket, as in take(None, ...).
  tokens = burst
  updated_at = now
end
local elapsed = now - updated_at
if elapsed < 0 then
  elapsed = 0
end
tokens = math.min(burst, tokens + elapsed * rate)
updated_at = math.max(updated_at, now)
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1],
  'tokens', string.format('%.17g', tokens),
  'updated_at', string.format('%.17g', updated_at))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {string.format('%.17g', wait), string.format('%.17g', tokens),
  string.format('%.17g', updated_at)}
"""


def caller_hash(caller_key: str) -> str:
    """A fixed-length name for the caller: keys stay short and hold no identity."""
    return hashlib.sha256(caller_key.encode()).hexdigest()[:32]


def redis_key(caller_key: str) -> str:
    return f"{KEY_PREFIX}{caller_hash(caller_key)}"


def refill_milliseconds(rate_per_second: float, burst: int) -> int:
    """How long an idle bucket lives in Redis: until it would be full anyway.

    One second more than an empty bucket takes to refill, so that a bucket is
    only ever forgotten when forgetting it (a full bucket) changes nothing.
    """
    return math.ceil(burst / rate_per_second * 1000) + 1000


class RateLimiter:
    """Answers, per caller, whether a call may go ahead now or how long to wait."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        redis_url: str | None,
        timeout_seconds: float,
        max_local_buckets: int = DEFAULT_MAX_LOCAL_BUCKETS,
    ) -> None:
        """`rate_per_second` <= 0 disables limiting (no Redis connection is made).

        Raises ValueError when limiting is enabled with a burst below 1 (no
        call could ever be allowed).
        """
        self._enabled = rate_per_second > 0
        self._rate = rate_per_second
        self._burst = burst
        self._timeout_seconds = timeout_seconds
        self._max_local_buckets = max_local_buckets
        self._local: OrderedDict[str, BucketState] = OrderedDict()
        self._redis: aioredis.Redis | None = None
        self._ttl_ms = 0
        self._redis_paused_until = 0.0
        self._last_warning_at: float | None = None
        self._failures_since_warning = 0
        if not self._enabled:
            return
        if burst < 1:
            raise ValueError(f"burst must be at least 1 when rate limiting is on, not {burst}")
        if redis_url:
            self._ttl_ms = refill_milliseconds(rate_per_second, burst)
            # A blocking pool: checks beyond the pool's size wait (within the
            # deadline) for a connection, where redis-py's default pool would
            # open a connection per concurrent check and fail past 100 of them.
            pool = aioredis.BlockingConnectionPool.from_url(
                redis_url,
                max_connections=_MAX_CONNECTIONS,
                timeout=timeout_seconds,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                retry=Retry(NoBackoff(), 0),
            )
            self._redis = aioredis.Redis.from_pool(pool)
            self._script = self._redis.register_script(TAKE_SCRIPT)

    @property
    def enabled(self) -> bool:
        return self._enabled

    async def check(self, caller_key: str) -> float:
        """Take one token for `caller_key`: 0.0 if the call may go ahead, else seconds to wait.

        Never raises for a Redis failure, and waits for Redis at most
        `timeout_seconds`.
        """
        if not self._enabled:
            return 0.0
        name = caller_hash(caller_key)
        if self._redis is not None and time.monotonic() >= self._redis_paused_until:
            try:
                async with asyncio.timeout(self._timeout_seconds):
                    return await self._check_in_redis(name)
            except _REDIS_ERRORS as exc:
                # asyncio.timeout turns only its own deadline into
                # TimeoutError; a cancelled call still raises CancelledError.
                self._redis_failed(exc)
        return self._check_locally(name)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def _check_in_redis(self, name: str) -> float:
        reply = await self._script(
            keys=[KEY_PREFIX + name],
            args=[repr(self._rate), self._burst, repr(_COST), self._ttl_ms, ""],
        )
        wait = float(reply[0])
        return wait if wait > 0 else 0.0

    def _check_locally(self, name: str) -> float:
        state, wait = take(self._local.get(name), time.monotonic(), self._rate, self._burst, _COST)
        self._local[name] = state
        self._local.move_to_end(name)
        while len(self._local) > self._max_local_buckets:
            self._local.popitem(last=False)
        return wait

    def _redis_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._redis_paused_until = now + _REDIS_PAUSE_SECONDS
        self._failures_since_warning += 1
        if self._last_warning_at is not None and (
            now - self._last_warning_at < _WARN_INTERVAL_SECONDS
        ):
            return
        logger.warning(
            "rate limiter: Redis failed (%s: %s), %d failure(s) since the last warning;"
            " limiting in this process only until Redis answers again",
            type(exc).__name__,
            exc,
            self._failures_since_warning,
        )
        self._last_warning_at = now
        self._failures_since_warning = 0
