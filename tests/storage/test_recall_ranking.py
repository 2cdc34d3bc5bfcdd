"""Recall's top-k (storage/memories.py) is exact: no better row is ever missed.

Without query text the statement reads only the rows that could still
reach the top of each importance band; with query text (and a query
vector, where PostgreSQL has pgvector) it fetches only the matched or
embedded rows whose text score could still lift them into the top. These
tests hold both to a brute force over every row of a user whose data is
built to stress the bounds: importances on the band edges (0.0, 0.1, ...,
1.0), ties, updates in the future, expired rows, words common and rare,
memories without a vector, and weights and half-lives from zero to the
limits; and with every filter that narrows the rows each path reads
(metadata containment, update and last-access times, never-accessed rows).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest

from memory_service.domain import ranking
from memory_service.domain.models import Embedding, RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.storage import migrate, session
from memory_service.storage.memories import MemoryStore
from tests.conftest import create_scratch_database, drop_scratch_database
from tests.storage.helpers import bm25_relevance, service_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROWS = 3000
CATEGORIES = ("preference", "class_context", "fact")
# Word frequencies from common (in most memories) to rare (a handful).
VOCABULARY = {"student": 30, "lesson": 12, "quiz": 6, "parents": 3, "goggles": 1}
FILLER = ["notes", "week", "room", "plan", "group", "reading", "essay", "lab"]
MODEL, DIMENSION = "test-8d", 8


@dataclass(frozen=True)
class Row:
    id: int
    importance: float
    category: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    metadata: dict[str, Any]
    last_accessed: datetime | None


@dataclass(frozen=True)
class Data:
    store: MemoryStore
    # However few the postings: the reachable memories joined with the
    # essential terms' postings, or each of them probed.
    essential: MemoryStore
    probing: MemoryStore
    owner: asyncpg.Connection
    user: uuid.UUID
    rows: list[Row]
    vectors: dict[int, np.ndarray]  # empty without pgvector


def _content(rng: random.Random) -> str:
    words = rng.choices(list(VOCABULARY), weights=list(VOCABULARY.values()), k=rng.randint(0, 3))
    return " ".join(words + rng.choices(FILLER, k=rng.randint(1, 12)))


@pytest.fixture(scope="module")
async def data(pg_admin_url: str) -> AsyncIterator[Data]:
    owner_url = await create_scratch_database(pg_admin_url)
    await migrate.upgrade(owner_url)
    rng = random.Random(7)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(owner_url)
    try:
        user, neighbour = [
            await conn.fetchval("INSERT INTO users (email) VALUES ($1) RETURNING id", email)
            for email in ("heavy@x.example", "neighbour@x.example")
        ]
        records = []
        for n in range(ROWS):
            roll = rng.random()
            if roll < 0.3:
                importance = rng.randint(0, 10) / 10  # exactly on a band edge
            elif roll < 0.4:
                importance = 0.85  # many ties
            else:
                importance = round(rng.random(), 4)
            if n % 50 == 0:
                updated = now + timedelta(days=rng.random() * 2)  # a clock ahead of ours
            elif n % 7 == 0:
                updated = now - timedelta(days=3)  # ties in time too
            else:
                updated = now - timedelta(days=rng.random() * 400)
            expires = now - timedelta(days=1) if n % 20 == 0 else None
            metadata: dict[str, Any] = {"grade": n % 4, "unit": {"id": n % 7}}
            if n % 3 == 0:
                metadata["flags"] = ["x", "y"] if n % 2 else ["y"]
            accessed = None if n % 5 == 0 else now - timedelta(days=rng.random() * 100)
            records.append(
                (
                    user,
                    _content(rng),
                    importance,
                    rng.choice(CATEGORIES),
                    updated - timedelta(days=rng.random() * 30),
                    updated,
                    expires,
                    json.dumps(metadata),
                    accessed,
                )
            )
        records.append(
            (neighbour, "not this user's", 1.0, "fact", now, now, None, '{"grade": 1}', None)
        )
        await conn.copy_records_to_table(
            "user_memories",
            records=records,
            columns=[
                "user_id",
                "content",
                "importance",
                "category",
                "created_at",
                "updated_at",
                "expires_at",
                "metadata",
                "last_accessed",
            ],
        )
        await conn.execute("ANALYZE user_memories")
        fetched = await conn.fetch(
            "SELECT id, importance, category, created_at, updated_at, expires_at,"
            " metadata::text AS metadata, last_accessed FROM user_memories WHERE user_id = $1",
            user,
        )
        vectors = {}
        if await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL"):
            gen = np.random.default_rng(5)
            for r in fetched:
                if r["id"] % 10:  # one in ten has no vector yet
                    v = gen.standard_normal(DIMENSION)
                    vectors[r["id"]] = v / np.linalg.norm(v)
            await conn.executemany(
                "INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)"
                " VALUES ($1, $2, $3, $4::text::vector)",
                [(user, i, MODEL, _vector_text(v)) for i, v in vectors.items()],
            )
    except BaseException:
        await conn.close()
        raise
    db = service_database(owner_url, size=3)
    await db.open()
    try:
        with session.acting_as(session.ALL_USERS):
            yield Data(
                MemoryStore(db, vectors=bool(vectors)),
                MemoryStore(db, vectors=bool(vectors), fully_scored_postings=0, probe_cost=1e9),
                MemoryStore(db, vectors=bool(vectors), fully_scored_postings=0, probe_cost=0),
                conn,
                user,
                [Row(**(dict(r) | {"metadata": json.loads(r["metadata"])})) for r in fetched],
                vectors,
            )
    finally:
        await db.close()
        await conn.close()
        await drop_scratch_database(pg_admin_url, owner_url)


def _contains(value: Any, pattern: Any) -> bool:
    """PostgreSQL's jsonb `value @> pattern`, for the JSON the tests use (no booleans)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(
            any(_contains(item, p) for item in value) for p in pattern
        )
    return bool(value == pattern)


def _vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


METADATA_FILTERS: list[dict[str, Any]] = [
    {"grade": 1},
    {"unit": {"id": 3}},
    {"flags": ["y"]},
    {"flags": ["x", "y"], "grade": 3},
    {"grade": 2, "unit": {"id": 9}},  # matches nothing
]


def _new_filters(rng: random.Random) -> dict[str, Any]:
    """Some of the metadata, update-time and last-access filters (a rng of their own,
    so the other fields of each case stay what they were before these filters)."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {}
    if rng.random() < 0.3:
        fields["metadata"] = rng.choice(METADATA_FILTERS)
    if rng.random() < 0.25:
        fields["updated_from"] = now - timedelta(days=rng.choice([2, 3, 60, 300]))
    if rng.random() < 0.25:
        # 3 days: the tie of every seventh row; -1: before the clock-ahead rows
        fields["updated_before"] = now - timedelta(days=rng.choice([-1, 3, 30, 200]))
    if rng.random() < 0.25:
        fields["accessed_from"] = now - timedelta(days=rng.choice([5, 50]))
    if rng.random() < 0.25:
        fields["accessed_before"] = now - timedelta(days=rng.choice([10, 90]))
    return fields


def _cases() -> list[tuple[Weights, dict[str, Any]]]:
    rng = random.Random(11)
    weights = [0.0, 0.05, 0.5, 1.0, 3.0, 10.0]
    half_lives = [
        timedelta(hours=1),
        timedelta(days=1),
        timedelta(days=30),
        timedelta(days=3650),
        ranking.MAX_HALF_LIFE,
    ]
    cases: list[tuple[Weights, dict[str, Any]]] = [
        (ranking.DEFAULT_WEIGHTS, {}),
        (ranking.DEFAULT_WEIGHTS, {"limit": 1}),
        (ranking.DEFAULT_WEIGHTS, {"limit": 100}),
        (Weights(1.0, 0.0, 0.0, timedelta(days=30)), {}),  # importance only
        (Weights(0.0, 1.0, 0.0, timedelta(days=30)), {}),  # recency only
        (Weights(0.0, 0.0, 1.0, timedelta(days=30)), {}),  # neither: every score is 0
        (ranking.DEFAULT_WEIGHTS, {"query": "the of and"}),  # stop words: ranks as no query
        (ranking.DEFAULT_WEIGHTS, {"limit": 500, "metadata": {"grade": 1}}),
    ]
    extra = random.Random(17)
    while len(cases) < 40:
        w = Weights(rng.choice(weights), rng.choice(weights), 1.0, rng.choice(half_lives))
        fields: dict[str, Any] = {"limit": rng.choice([1, 3, 10, 25, 100])}
        if rng.random() < 0.3:
            fields["min_importance"] = rng.choice([0.1, 0.35, 0.85, 0.95, 1.0])
        if rng.random() < 0.3:
            fields["categories"] = [rng.choice(CATEGORIES)]
        cases.append((w, fields | _new_filters(extra)))
    return cases


@pytest.mark.parametrize(("weights", "fields"), _cases())
async def test_recall_returns_the_true_top_k(
    data: Data, weights: Weights, fields: dict[str, Any]
) -> None:
    await _check_top_k(data, RecallQuery(user_id=data.user, weights=weights, **fields))


def _text_cases() -> list[tuple[Weights, dict[str, Any]]]:
    rng = random.Random(13)
    queries = ["student", "student lesson", "quiz parents", "goggles", "lesson notes", "nowhere"]
    weights = [0.0, 0.05, 0.5, 1.0, 3.0, 10.0]
    cases: list[tuple[Weights, dict[str, Any]]] = [
        (ranking.DEFAULT_WEIGHTS, {"query": q}) for q in queries
    ]
    cases.append(
        (ranking.DEFAULT_WEIGHTS, {"query": "student", "limit": 500, "metadata": {"grade": 2}})
    )
    extra = random.Random(19)
    while len(cases) < 41:
        w = Weights(
            rng.choice(weights),
            rng.choice(weights),
            rng.choice(weights),
            timedelta(days=rng.choice([1, 30, 3650])),
            semantic=rng.choice(weights),
        )
        fields: dict[str, Any] = {"query": rng.choice(queries), "limit": rng.choice([1, 10, 100])}
        if rng.random() < 0.3:
            fields["min_importance"] = rng.choice([0.35, 0.85])
        if rng.random() < 0.3:
            fields["categories"] = [rng.choice(CATEGORIES)]
        cases.append((w, fields | _new_filters(extra)))
    return cases


@pytest.mark.parametrize("path", ["scored", "essential", "probing"])
@pytest.mark.parametrize(("weights", "fields"), _text_cases())
async def test_query_recall_returns_the_true_top_k(
    data: Data, weights: Weights, fields: dict[str, Any], path: str
) -> None:
    """Lexical only: matches first, then the rest; each by score."""
    q = RecallQuery(user_id=data.user, weights=weights, **fields)
    await _check_top_k(data, q, path)


@pytest.mark.parametrize("path", ["scored", "essential", "probing"])
@pytest.mark.parametrize(("weights", "fields"), _text_cases())
async def test_hybrid_recall_returns_the_true_top_k(
    data: Data, weights: Weights, fields: dict[str, Any], path: str
) -> None:
    """Query text and a query vector: one score for all, every memory a candidate."""
    if not data.vectors:
        pytest.skip("this PostgreSQL has no pgvector: no hybrid recall to test")
    gen = np.random.default_rng(len(str(fields)) + int(weights.semantic * 100))
    vector = gen.standard_normal(DIMENSION)
    vector /= np.linalg.norm(vector)
    embedding = Embedding(MODEL, tuple(float(x) for x in vector))
    q = RecallQuery(user_id=data.user, weights=weights, query_embedding=embedding, **fields)
    await _check_top_k(data, q, path)


async def _check_top_k(data: Data, q: RecallQuery, path: str = "scored") -> None:
    """The recall's rows, scores and order are the brute force's over every row."""
    relevance = await bm25_relevance(data.owner, data.user, q.query) if q.query else {}
    # A semantic weight of 0 ranks as if no vector had been sent.
    semantic = q.query_embedding is not None and q.weights.semantic > 0
    query_vector = np.array(q.query_embedding.vector) if q.query_embedding and semantic else None
    lexical_only = query_vector is None and bool(relevance)
    weights = q.weights
    before = datetime.now(UTC)
    store = {"scored": data.store, "essential": data.essential, "probing": data.probing}[path]
    got = await store.recall(q, EVERYTHING, log=False)
    after = datetime.now(UTC)

    eligible = [
        r
        for r in data.rows
        if (r.expires_at is None or r.expires_at > after)
        and r.importance >= q.min_importance
        and (not q.categories or r.category in q.categories)
        and (q.metadata is None or _contains(r.metadata, q.metadata))
        and (q.updated_from is None or r.updated_at >= q.updated_from)
        and (q.updated_before is None or r.updated_at < q.updated_before)
        # Never accessed: before every time.
        and (
            q.accessed_from is None
            or (r.last_accessed is not None and r.last_accessed >= q.accessed_from)
        )
        and (
            q.accessed_before is None
            or r.last_accessed is None
            or r.last_accessed < q.accessed_before
        )
    ]
    # PostgreSQL's now() is between `before` and `after`; a score can drift
    # by at most this much across that window. PostgreSQL's BM25 and cosine
    # sum in another order than Python's, and pgvector keeps single precision.
    drift = weights.recency * (1 - 0.5 ** ((after - before) / weights.half_life)) + 1e-9
    tolerance = 2 * drift + 1e-9 + weights.semantic * 1e-6

    def score(r: Row) -> float:
        parts = ranking.score_parts(
            r.importance, before - r.updated_at, relevance.get(r.id, 0.0), weights
        )
        similarity = 0.0
        if query_vector is not None and r.id in data.vectors:
            similarity = max(0.0, float(data.vectors[r.id] @ query_vector))
        return sum(parts) + weights.semantic * similarity

    def matched(memory_id: int) -> bool:
        return lexical_only and memory_id in relevance

    assert len(got) == min(q.limit, len(eligible))
    by_id = {r.id: r for r in eligible}
    assert all(s.memory.id in by_id for s in got)
    for s in got:
        assert s.score == pytest.approx(score(by_id[s.memory.id]), abs=tolerance)
    keys = [(matched(s.memory.id), s.score) for s in got]
    assert keys == sorted(keys, reverse=True)
    returned = {s.memory.id for s in got}
    missed = [(matched(r.id), score(r)) for r in eligible if r.id not in returned]
    if missed:
        best_matched, best_score = max(missed)
        last_matched, last_score = keys[-1]
        assert best_matched <= last_matched
        if best_matched == last_matched:
            assert best_score <= last_score + tolerance
