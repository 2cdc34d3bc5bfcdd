"""Recall's banded top-k (storage/memories.py) is exact: no better row is ever missed.

The statement reads only the rows that could still reach the top of each
importance band. These tests hold it to a brute force over every row of a
user whose data is built to stress the bound: importances on the band edges
(0.0, 0.1, ..., 1.0), ties, updates in the future, expired rows, and
weights and half-lives from zero to the limits.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from memory_service.domain import ranking
from memory_service.domain.models import RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.storage import migrate, session
from memory_service.storage.memories import MemoryStore
from tests.conftest import create_scratch_database, drop_scratch_database
from tests.storage.helpers import service_database

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROWS = 3000
CATEGORIES = ("preference", "class_context", "fact")


@dataclass(frozen=True)
class Row:
    id: int
    importance: float
    category: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class Data:
    store: MemoryStore
    user: uuid.UUID
    rows: list[Row]


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
            records.append(
                (
                    user,
                    f"memory {n}",
                    importance,
                    rng.choice(CATEGORIES),
                    updated - timedelta(days=rng.random() * 30),
                    updated,
                    expires,
                )
            )
        records.append((neighbour, "not this user's", 1.0, "fact", now, now, None))
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
            ],
        )
        await conn.execute("ANALYZE user_memories")
        fetched = await conn.fetch(
            "SELECT id, importance, category, created_at, updated_at, expires_at"
            " FROM user_memories WHERE user_id = $1",
            user,
        )
    finally:
        await conn.close()
    db = service_database(owner_url, size=3)
    await db.open()
    try:
        with session.acting_as(session.ALL_USERS):
            yield Data(MemoryStore(db), user, [Row(**dict(r)) for r in fetched])
    finally:
        await db.close()
        await drop_scratch_database(pg_admin_url, owner_url)


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
    ]
    while len(cases) < 40:
        w = Weights(rng.choice(weights), rng.choice(weights), 1.0, rng.choice(half_lives))
        fields: dict[str, Any] = {"limit": rng.choice([1, 3, 10, 25, 100])}
        if rng.random() < 0.3:
            fields["min_importance"] = rng.choice([0.1, 0.35, 0.85, 0.95, 1.0])
        if rng.random() < 0.3:
            fields["categories"] = [rng.choice(CATEGORIES)]
        cases.append((w, fields))
    return cases


@pytest.mark.parametrize(("weights", "fields"), _cases())
async def test_recall_returns_the_true_top_k(
    data: Data, weights: Weights, fields: dict[str, Any]
) -> None:
    q = RecallQuery(user_id=data.user, weights=weights, **fields)
    before = datetime.now(UTC)
    got = await data.store.recall(q, EVERYTHING, log=False)
    after = datetime.now(UTC)

    eligible = [
        r
        for r in data.rows
        if (r.expires_at is None or r.expires_at > after)
        and r.importance >= q.min_importance
        and (not q.categories or r.category in q.categories)
    ]
    # PostgreSQL's now() is between `before` and `after`; a score can drift
    # by at most this much across that window.
    drift = weights.recency * (1 - 0.5 ** ((after - before) / weights.half_life)) + 1e-9

    def score(r: Row) -> float:
        return sum(ranking.score_parts(r.importance, before - r.updated_at, 0.0, weights))

    assert len(got) == min(q.limit, len(eligible))
    by_id = {r.id: r for r in eligible}
    assert all(s.memory.id in by_id for s in got)
    for s in got:
        assert s.score == pytest.approx(score(by_id[s.memory.id]), abs=drift)
    scores = [s.score for s in got]
    assert scores == sorted(scores, reverse=True)
    returned = {s.memory.id for s in got}
    best_missed = max((score(r) for r in eligible if r.id not in returned), default=None)
    if best_missed is not None:
        assert best_missed <= scores[-1] + 2 * drift
