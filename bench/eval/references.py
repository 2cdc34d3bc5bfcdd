"""What the service is compared with: rankings computed in Python on each teacher's memories.

Both rank only the query's user's memories, as RecallMemories does, and
ignore importance and age: they measure text relevance alone.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi
from wordllama import WordLlama

from bench.eval import text
from bench.eval.corpus import Corpus

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


def load_wordllama() -> WordLlama:
    """WordLlama's 256-dimension model, from its wheel alone: nothing is downloaded.

    The wheel ships the weights and the tokenizer config, but `load()` looks
    for the tokenizer only in `<cache_dir>/tokenizers/`, so it is copied to a
    scratch cache there; `disable_download` makes a missing file an error
    rather than a fetch from the model hub.
    """
    import wordllama

    cache = Path(tempfile.mkdtemp(prefix="wordllama-"))
    try:
        (cache / "tokenizers").mkdir()
        for config in (Path(wordllama.__file__).parent / "tokenizers").glob("*.json"):
            shutil.copy(config, cache / "tokenizers" / config.name)
        return WordLlama.load(cache_dir=cache, disable_download=True)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def dense(corpus: Corpus) -> Rankings:
    """Brute-force cosine similarity of WordLlama embeddings (static, 256 dimensions)."""
    model = load_wordllama()
    rankings: Rankings = {}
    for user in corpus.users:
        memories = corpus.memories_of(user["id"])
        queries = [q for q in corpus.queries if q.user == user["id"]]
        documents = model.embed([m.content for m in memories], norm=True)
        asked = model.embed([q.query for q in queries], norm=True)
        for query, similarities in zip(queries, np.asarray(asked @ documents.T), strict=True):
            rankings[query.id] = [memories[i].id for i in np.argsort(-similarities, kind="stable")]
    return rankings
