"""Token-bucket arithmetic: burst, refill, waits, a clock that goes backwards."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_service.domain.token_bucket import BucketState, take


def test_a_new_caller_gets_the_whole_burst_then_waits() -> None:
    state = None
    for _ in range(3):
        state, wait = take(state, 100.0, rate_per_second=2.0, burst=3)
        assert wait == 0.0
    state, wait = take(state, 100.0, rate_per_second=2.0, burst=3)
    assert wait == pytest.approx(0.5)  # one token at 2 per second
    assert state == BucketState(tokens=0.0, updated_at=100.0)


def test_a_rejected_call_takes_nothing() -> None:
    state = BucketState(tokens=0.25, updated_at=10.0)
    for _ in range(5):
        state, wait = take(state, 10.0, rate_per_second=1.0, burst=1)
        assert wait == pytest.approx(0.75)
    assert state.tokens == 0.25


def test_waiting_the_given_time_allows_the_call() -> None:
    state, _ = take(BucketState(0.0, 0.0), 0.0, rate_per_second=4.0, burst=2)
    state, wait = take(state, 0.0, rate_per_second=4.0, burst=2)
    assert wait == pytest.approx(0.25)
    state, wait = take(state, 0.25, rate_per_second=4.0, burst=2)
    assert wait == 0.0
    assert state.tokens == pytest.approx(0.0)


def test_refill_stops_at_the_burst() -> None:
    state, wait = take(BucketState(0.0, 0.0), 1e6, rate_per_second=10.0, burst=5)
    assert wait == 0.0
    assert state == BucketState(tokens=4.0, updated_at=1e6)


def test_a_bucket_above_the_burst_is_cut_down() -> None:
    # The burst was lowered since the bucket was stored.
    state, _ = take(BucketState(50.0, 0.0), 0.0, rate_per_second=1.0, burst=5)
    assert state.tokens == 4.0


def test_a_clock_going_backwards_mints_no_tokens() -> None:
    state, _ = take(BucketState(0.0, 100.0), 90.0, rate_per_second=1.0, burst=10)
    assert state == BucketState(tokens=0.0, updated_at=100.0)
    # Nor is the interval credited twice once the clock is back at 101.
    state, _ = take(state, 101.0, rate_per_second=1.0, burst=10)
    assert state.tokens == pytest.approx(0.0)  # one token refilled, one taken


def test_cost_counts_tokens() -> None:
    state, wait = take(None, 0.0, rate_per_second=1.0, burst=5, cost=3)
    assert (state.tokens, wait) == (2.0, 0.0)
    state, wait = take(state, 0.0, rate_per_second=1.0, burst=5, cost=3)
    assert (state.tokens, wait) == (2.0, 1.0)


@pytest.mark.parametrize(
    ("rate", "burst", "cost"),
    [(0.0, 1, 1.0), (-1.0, 1, 1.0), (1.0, 0, 1.0), (1.0, 2, 3.0), (1.0, 2, 0.0)],
)
def test_impossible_settings_are_refused(rate: float, burst: int, cost: float) -> None:
    with pytest.raises(ValueError):
        take(None, 0.0, rate_per_second=rate, burst=burst, cost=cost)


@given(
    rate=st.floats(0.01, 1000),
    burst=st.integers(1, 1000),
    steps=st.lists(st.floats(-10, 10), max_size=50),
)
def test_never_more_than_burst_plus_refill(rate: float, burst: int, steps: list[float]) -> None:
    """Over any run of calls, allowed calls <= burst + rate * elapsed (clock may jitter)."""
    state: BucketState | None = None
    now = 1000.0
    first: float | None = None  # the bucket starts full at the first call
    latest = now
    allowed = 0
    for step in steps:
        now += step
        first = now if first is None else first
        latest = max(latest, now)
        state, wait = take(state, now, rate, burst)
        assert wait >= 0.0
        assert 0.0 <= state.tokens <= burst
        if wait == 0.0:
            allowed += 1
        else:
            assert wait > 0.0
    assert allowed <= burst + rate * (latest - (first if first is not None else now)) + 1e-6
