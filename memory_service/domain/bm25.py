"""BM25 relevance of a memory to a query, normalized to 0..1.

This is the specification; storage/memories.py computes the same inside
PostgreSQL from the per-user term index (migration 0010), and
tests/storage/test_bm25.py checks the two agree.

Terms are PostgreSQL's English lexemes (stemmed, stop words dropped), as in
`to_tsvector('english', ...)`. Statistics are over the user's own memories:
N memories with average length avgdl (term occurrences, at least 1), and df(t)
memories containing term t. For each query term t with df(t) > 0:

    idf(t)     = ln(1 + (N - df + 0.5) / (df + 0.5))         (never negative)
    part(t, d) = idf(t) * tf * (K1 + 1) / (tf + K1 * (1 - B + B * len(d) / avgdl))

bm25(d) is the sum of the parts, and the relevance is bm25(d) divided by
the most any memory could score for this query, the sum of idf(t) * (K1 + 1)
(the limit of a part as tf grows): 0 for no query term, approaching 1 for a
memory dense with every one of them. Query terms no memory of the user has
count for nothing, in the score and in the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

K1 = 1.2
B = 0.75


def idf(docs: int, df: int) -> float:
    return math.log(1.0 + (docs - df + 0.5) / (df + 0.5))


def relevance(
    tf: Mapping[str, int], doc_len: int, df: Mapping[str, int], docs: int, avgdl: float
) -> float:
    """`tf`: the memory's frequency of each query term; `df`: each query term's df (> 0)."""
    weights = {term: idf(docs, n) for term, n in df.items() if n > 0}
    if not weights:
        return 0.0
    norm = K1 * (1 - B + B * doc_len / max(avgdl, 1.0))
    score = sum(w * tf[t] * (K1 + 1) / (tf[t] + norm) for t, w in weights.items() if tf.get(t))
    return score / (sum(weights.values()) * (K1 + 1))
