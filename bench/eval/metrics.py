"""Ranking quality of one answer (the ids returned, best first) against the labels."""

from __future__ import annotations

import math
from collections.abc import Sequence

CUTOFF = 10
NAMES = ("hit@1", "hit@5", "hit@10", "MRR", "nDCG@10")


def score(ranked: Sequence[str], relevant: Sequence[str]) -> dict[str, float]:
    """hit@k (a relevant memory in the top k), MRR and nDCG with binary gains, all at 10."""
    top = list(ranked[:CUTOFF])
    hits = [i for i, memory in enumerate(top) if memory in relevant]
    first = hits[0] + 1 if hits else math.inf
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), CUTOFF)))
    return {
        "hit@1": float(first <= 1),
        "hit@5": float(first <= 5),
        "hit@10": float(first <= 10),
        "MRR": 1 / first,
        "nDCG@10": sum(1 / math.log2(i + 2) for i in hits) / ideal,
    }


def mean(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    return {name: sum(s[name] for s in scores) / len(scores) for name in NAMES}
