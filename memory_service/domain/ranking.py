"""The recall ranking formula.

This function is the specification; storage/memories.py computes the same
formula inside PostgreSQL (so ordering and LIMIT happen next to the data) and
tests/rpc/test_recall.py checks the two agree on the scores it returns.
"""

from __future__ import annotations

from datetime import timedelta

from memory_service.domain.models import Weights

DEFAULT_WEIGHTS = Weights(
    importance=1.0, recency=0.5, relevance=1.0, half_life=timedelta(days=30), semantic=4.0
)
MAX_WEIGHT = 10.0
MIN_HALF_LIFE = timedelta(minutes=1)
MAX_HALF_LIFE = timedelta(days=36525)
# Recency stops decaying after this many half-lives (2**-1000 ~ 1e-301):
# PostgreSQL's power() raises "underflow" rather than return 0.0.
MAX_HALF_LIVES = 1000


def recency(age: timedelta, half_life: timedelta) -> float:
    """0.5 ** (age / half_life): 1.0 for a brand-new memory, 0.5 at one half-life."""
    seconds = max(age.total_seconds(), 0.0)
    return float(0.5 ** min(seconds / half_life.total_seconds(), MAX_HALF_LIVES))


def score_parts(
    importance: float, age: timedelta, relevance: float, weights: Weights
) -> tuple[float, float, float]:
    """(importance part, recency part, relevance part); the score is their sum."""
    return (
        weights.importance * importance,
        weights.recency * recency(age, weights.half_life),
        weights.relevance * relevance,
    )
