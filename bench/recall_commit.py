"""What recall's bookkeeping costs with synchronous_commit on and off (issue 12).

A logged recall writes one interaction row per returned memory and bumps
their last_accessed. With synchronous_commit on, its COMMIT waits for the WAL
flush (fdatasync); off, it returns once the commit is in PostgreSQL's WAL
buffers (storage/memories.py). This loads a throwaway database (the
embedded PostgreSQL 18 unless --database-url names a server where the owner
may create databases) with --users users of --each memories (default 20 x
500 = 10,000), then runs logged recalls through the storage layer
(MemoryStore.recall, log=True, the service role under row-level security,
random users and two-word queries) for --seconds at each concurrency, once
with each setting, alternating, and reports recalls/s and p50/p99 latency.

    .venv/bin/python bench/recall_commit.py [--database-url URL] [--seconds 10]

Only the recall's own transaction changes setting; the numbers are quoted in
docs/schema.md. The service's real targets are judged by `make bench` (1M
memories).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pg
from vocabulary import FILLER_WORDS

from memory_service.domain.errors import Contention
from memory_service.domain.models import RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.memories import MemoryStore

CONCURRENCY = (1, 16)


class Switched(Database):
    """A Database whose async_commit requests are honoured only when `async_recall` is set."""

    async_recall = True

    @asynccontextmanager
    async def connection(self, **kwargs: Any) -> AsyncIterator[asyncpg.Connection]:
        kwargs["async_commit"] = kwargs.get("async_commit", False) and self.async_recall
        async with super().connection(**kwargs) as conn:
            yield conn


async def load(owner_url: str, users: int, each: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(owner_url)
    try:
        rng, now = random.Random(5), datetime.now(UTC)
        ids = []
        for i in range(users):
            user = await conn.fetchval(
                "INSERT INTO users (email) VALUES ($1) RETURNING id", f"u{i}@x.example"
            )
            ids.append(user)
            rows = []
            for _ in range(each):
                updated = now - timedelta(days=rng.random() * 180)
                rows.append(
                    (
                        user,
                        " ".join(rng.choices(FILLER_WORDS, k=rng.randint(8, 40))),
                        round(rng.random(), 3),
                        "fact",
                        updated,
                        updated,
                    )
                )
            await conn.copy_records_to_table(
                "user_memories",
                records=rows,
                columns=[
                    "user_id",
                    "content",
                    "importance",
                    "category",
                    "created_at",
                    "updated_at",
                ],
            )
        await conn.execute("VACUUM ANALYZE user_memories")
        await conn.execute("VACUUM ANALYZE memory_terms")
        return ids
    finally:
        await conn.close()


async def run(
    store: MemoryStore, users: list[uuid.UUID], concurrency: int, seconds: float
) -> tuple[float, float, float]:
    """(recalls/s, p50 ms, p99 ms) of `concurrency` loops of logged recalls."""
    weights = Weights(0.3, 0.3, 0.4, timedelta(days=30))
    times: list[float] = []
    ends = time.perf_counter() + seconds

    async def loop(seed: int) -> None:
        rng = random.Random(seed)
        with session.acting_as(session.ALL_USERS):
            while time.perf_counter() < ends:
                q = RecallQuery(
                    rng.choice(users), weights, query=" ".join(rng.sample(FILLER_WORDS, 2))
                )
                started = time.perf_counter()
                try:
                    await store.recall(q, EVERYTHING, log=True)
                except Contention:  # a rare deadlock: retried once, as the service does
                    await store.recall(q, EVERYTHING, log=True)
                times.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(loop(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(times)
    return (
        len(times) / elapsed,
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    )


async def measure(owner_url: str, users: list[uuid.UUID], seconds: float, rounds: int) -> None:
    db = Switched(
        PoolSettings(
            url=migrate.app_role_url(owner_url),
            platform_url=migrate.platform_role_url(owner_url),
            size=max(CONCURRENCY) + 2,
            user_size=1,
            max_overflow=0,
        )
    )
    await db.open()
    try:
        store = MemoryStore(db)
        db.async_recall = True
        await run(store, users, 4, 2.0)  # warm: plans, caches, the pool
        results: dict[tuple[int, bool], list[tuple[float, float, float]]] = {}
        for _ in range(rounds):
            for concurrency in CONCURRENCY:
                for async_recall in (False, True):
                    db.async_recall = async_recall
                    result = await run(store, users, concurrency, seconds)
                    results.setdefault((concurrency, async_recall), []).append(result)
        print(f"\n== logged recalls, {seconds:.0f} s each, {rounds} rounds alternating (median)")
        for (concurrency, async_recall), runs in sorted(results.items()):
            rate, p50, p99 = (statistics.median(r[i] for r in runs) for i in range(3))
            setting = "off" if async_recall else "on "
            print(
                f"  c={concurrency:2} synchronous_commit {setting}: {rate:7.0f} recalls/s,"
                f" p50 {p50:6.2f} ms, p99 {p99:6.2f} ms"
            )
    finally:
        await db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="owner's URL of a server (default: embedded)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--each", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    async with pg.scratch_database(args.database_url, "faraday-commit") as owner_url:
        conn = await asyncpg.connect(owner_url)
        shown = [
            f"{s}={await conn.fetchval(f'SHOW {s}')}"
            for s in ("server_version", "fsync", "wal_sync_method", "wal_writer_delay")
        ]
        print("server:", ", ".join(shown))
        await conn.close()
        await migrate.upgrade(owner_url)
        users = await load(owner_url, args.users, args.each)
        print(f"loaded {args.users} x {args.each} memories")
        await measure(owner_url, users, args.seconds, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
