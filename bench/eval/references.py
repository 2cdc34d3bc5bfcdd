"""What the service is compared with: rankings computed in Python on each teacher's memories.

Both rank only the query's user's memories, as RecallMemories does, and
ignore importance and age: they measure text relevance alone.
"""

from __future__ import annotations

import numpy as np
from rank_bm25 import BM25Okapi

from bench.eval import text
from bench.eval.corpus import Corpus
from memory_service.embedding import Embedder

Rankings = dict[str, list[str]]  # query id -> memory ids, best first


def bm25(corpus: Corpus) -> Rankings:
    """BM25 (Okapi, rank_bm25's defaults) over the same stemmed words the service matches.

    Like the service, a memory that shares no word with the query is not a
    candidate (its score would be 0 and its place among the others arbitrary).
    """
    rankings: Rankings = {}
    for user in corpus.users:
        memories = corpus.memories_of(user["id"])
        index = BM25Okapi([text.terms(m.content) for m in memories])
        for query in (q for q in corpus.queries if q.user == user["id"]):
            scores = index.get_scores(text.terms(query.query))
            order = sorted(range(len(memories)), key=lambda i: -scores[i])
            rankings[query.id] = [memories[i].id for i in order if scores[i] > 0]
    return rankings


def dense(corpus: Corpus, model: Embedder) -> Rankings:
    """Brute-force cosine similarity with the service's own embedder (unit vectors)."""
    rankings: Rankings = {}
    for user in corpus.users:
        memories = corpus.memories_of(user["id"])
        queries = [q for q in corpus.queries if q.user == user["id"]]
        documents = model.embed([m.content for m in memories])
        asked = model.embed([q.query for q in queries])
        for query, similarities in zip(queries, np.asarray(asked @ documents.T), strict=True):
            rankings[query.id] = [memories[i].id for i in np.argsort(-similarities, kind="stable")]
    return rankings
