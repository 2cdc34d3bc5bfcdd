"""What the storage tests build alike: the service roles' pools, BM25 by brute force."""

from __future__ import annotations

import uuid
from collections import Counter

import asyncpg

from memory_service.domain import bm25
from memory_service.storage import migrate
from memory_service.storage.database import Database, PoolSettings


def service_database(owner_url: str, size: int = 2) -> Database:
    """A Database connecting as the service roles (faraday_app, faraday_platform); not open."""
    return Database(
        PoolSettings(
            url=migrate.app_role_url(owner_url),
            platform_url=migrate.platform_role_url(owner_url),
            size=size,
            user_size=1,
            max_overflow=0,
        )
    )


async def bm25_relevance(
    owner: asyncpg.Connection, user: uuid.UUID, query: str
) -> dict[int, float]:
    """domain.bm25 of `query` for each memory of `user` it matches, from PostgreSQL's lexemes."""
    rows = await owner.fetch(
        "SELECT m.id, t.lexeme, coalesce(array_length(t.positions, 1), 1) AS tf"
        " FROM user_memories m LEFT JOIN LATERAL unnest(m.content_tsv) t ON true"
        " WHERE m.user_id = $1",
        user,
    )
    terms: dict[int, Counter[str]] = {}
    for r in rows:
        terms.setdefault(r["id"], Counter())
        if r["lexeme"] is not None:
            terms[r["id"]][r["lexeme"]] = r["tf"]
    query_terms = await owner.fetchval(
        "SELECT tsvector_to_array(to_tsvector('english', $1))", query
    )
    docs = len(terms)
    avgdl = sum(sum(c.values()) for c in terms.values()) / docs
    df = {t: sum(1 for c in terms.values() if t in c) for t in query_terms}
    return {
        memory_id: bm25.relevance(counts, sum(counts.values()), df, docs, avgdl)
        for memory_id, counts in terms.items()
        if any(counts.get(t) for t in query_terms)
    }
