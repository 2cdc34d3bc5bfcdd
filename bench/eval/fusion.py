"""Fusing rankings in Python, to compare fusion rules on the service's own signals.

The eval asks the service for its `lexical` ranking (BM25 relevance alone)
and its `semantic` one (cosine alone), deep, with their scores, and fuses
them here (bench/eval/README.md, "Fused rows"). Each input is one signal's
ranking: the memories it scored, best first, as an ordered mapping from
memory id to score. A memory missing from a ranking has no evidence from
that signal: no rank, and a score of 0.

Ties keep the order in which the memories first appear, reading the rankings
in the order given (Python's sort is stable), so the output is
deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Ranking = Mapping[str, float]  # memory id -> score, best first

# Cormack, Clarke and Büttcher (SIGIR 2009), "Reciprocal rank fusion
# outperforms Condorcet and individual rank learning methods"; the constant
# Elasticsearch, OpenSearch and most hybrid-search write-ups use.
RRF_K = 60.0


def rrf(rankings: Sequence[Sequence[str]], k: float = RRF_K) -> list[str]:
    """Reciprocal rank fusion: a memory scores the sum of 1 / (k + rank), rank from 1.

    Scores are ignored, only positions count; a small k lets the first few
    places of each ranking dominate, a large one flattens the curve so
    agreement between rankings counts for more.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, not {k}")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, memory in enumerate(ranking, start=1):
            fused[memory] = fused.get(memory, 0.0) + 1.0 / (k + rank)
    return sorted(fused, key=lambda memory: -fused[memory])


def weighted_sum(
    rankings: Sequence[Ranking], weights: Sequence[float], *, normalise: bool
) -> list[str]:
    """Sum of weight * score over the rankings, a missing score counting as 0.

    normalise=False is the service's rule (its `hybrid` mode: relevance 1 *
    BM25 relevance + semantic 4 * cosine). normalise=True first maps each
    ranking's scores min-max onto 0..1 over the fused candidates (every memory
    in any ranking, missing ones at 0): the lowest becomes 0, the highest 1,
    and a ranking whose scores are all equal gives 1 to the memories it has.
    """
    if len(rankings) != len(weights):
        raise ValueError(f"{len(rankings)} rankings but {len(weights)} weights")
    candidates = list(dict.fromkeys(memory for ranking in rankings for memory in ranking))
    fused = dict.fromkeys(candidates, 0.0)
    for ranking, weight in zip(rankings, weights, strict=True):
        scores = {memory: ranking.get(memory, 0.0) for memory in candidates}
        if normalise and scores:
            low, high = min(scores.values()), max(scores.values())
            scores = {
                memory: (score - low) / (high - low) if high > low else float(memory in ranking)
                for memory, score in scores.items()
            }
        for memory, score in scores.items():
            fused[memory] += weight * score
    return sorted(candidates, key=lambda memory: -fused[memory])
