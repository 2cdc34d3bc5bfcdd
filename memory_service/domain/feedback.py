"""How feedback moves a memory's importance.

One rule covers every kind of feedback: importance moves a fraction
`learning_rate` of the way towards a target, so it never leaves 0..1.
helpful -> target 1; unhelpful -> target 0; rating r in 1..5 -> (r - 1) / 4.
An importance that falls below validation.SMALLEST_POSITIVE becomes 0, as a
caller could not have set it: a long run of unhelpful ratings would
otherwise reach subnormal floats, which PostgreSQL's float arithmetic in
recall refuses with "underflow".
"""

from __future__ import annotations

from memory_service.domain.errors import InvalidArgument
from memory_service.domain.validation import SMALLEST_POSITIVE

DEFAULT_LEARNING_RATE = 0.2
MIN_RATING = 1
MAX_RATING = 5


def target_importance(helpful: bool | None, rating: int | None) -> float:
    if helpful is not None and rating is not None:
        raise InvalidArgument.one("signal", "set either helpful or rating, not both")
    if helpful is not None:
        return 1.0 if helpful else 0.0
    if rating is None:
        raise InvalidArgument.one("signal", "one of helpful or rating is required")
    if not MIN_RATING <= rating <= MAX_RATING:
        raise InvalidArgument.one("rating", f"must be {MIN_RATING}..{MAX_RATING}, got {rating}")
    return (rating - MIN_RATING) / (MAX_RATING - MIN_RATING)


def next_importance(importance: float, target: float, learning_rate: float) -> float:
    """importance + learning_rate * (target - importance), clamped against rounding."""
    moved = min(1.0, max(0.0, importance + learning_rate * (target - importance)))
    return moved if moved >= SMALLEST_POSITIVE else 0.0
