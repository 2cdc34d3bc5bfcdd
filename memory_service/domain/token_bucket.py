"""Token-bucket rate limiting: the arithmetic, with no clock and no storage.

A bucket holds up to `burst` tokens and gains `rate_per_second` tokens every
second; a call costs `cost` tokens and is allowed only when the bucket holds
them. A rejected call takes nothing, so a caller hammering a full bucket does
not push its own recovery further away.

This function is the specification: storage/rate_limit.py runs the same
arithmetic inside Redis as a Lua script (so one bucket per caller is shared by
every server process), and tests/storage/test_rate_limit.py checks the two
agree step by step. Change them together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BucketState:
    """Tokens in the bucket as of `updated_at` (seconds on the caller's clock)."""

    tokens: float
    updated_at: float


def take(
    state: BucketState | None,
    now: float,
    rate_per_second: float,
    burst: int,
    cost: float = 1.0,
) -> tuple[BucketState, float]:
    """Try to take `cost` tokens at `now`.

    Returns the new state and the seconds to wait before the call would be
    allowed: 0.0 when it is allowed (and the tokens are taken), otherwise a
    positive wait (and nothing is taken). `state` None is a full bucket, which
    is also what a forgotten (expired, evicted) bucket must mean.

    A clock that goes backwards (another process's clock, NTP stepping) adds
    no tokens, and `updated_at` never moves back, so the time between the
    earlier and the later reading is not credited twice when the clock
    catches up.

    Raises ValueError when the call could never be allowed: a rate that is
    not positive, or a cost larger than the burst.
    """
    if not rate_per_second > 0:
        raise ValueError(f"rate_per_second must be positive, not {rate_per_second!r}")
    if not 0 < cost <= burst:
        raise ValueError(f"cost must be in (0, burst={burst}], not {cost!r}")
    if state is None:
        tokens, updated_at = float(burst), now
    else:
        tokens, updated_at = state.tokens, state.updated_at
    # The Lua script in storage/rate_limit.py repeats these lines, operation
    # for operation, so that both give the same floats.
    elapsed = now - updated_at
    if elapsed < 0:
        elapsed = 0.0
    tokens = min(float(burst), tokens + elapsed * rate_per_second)
    updated_at = max(updated_at, now)
    if tokens >= cost:
        return BucketState(tokens - cost, updated_at), 0.0
    return BucketState(tokens, updated_at), (cost - tokens) / rate_per_second
