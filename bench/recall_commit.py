"""What recall's bookkeeping costs written three ways (issue 12).

A logged recall writes one interaction row per returned memory and bumps
their last_accessed. Three ways to write them, measured here:

- `sync`: in the recall's own statement and transaction, its COMMIT
  waiting for the WAL flush (fdatasync), as before issue 12;
- `async`: the same, with synchronous_commit = off, so COMMIT returns once
  the commit record is in PostgreSQL's WAL buffers
  (FARADAY_RECALL_LOG_INTERVAL_SECONDS=0);
- `batched`: the recall only reads and queues its rows; the recall log
  (storage/recall_log.py) writes the queue every --interval seconds in one
  transaction, synchronous_commit off (the default since).

This loads a throwaway database (the embedded PostgreSQL 18 unless
--database-url names a server where the owner may create databases) with
--users users of --each memories (default 20 x 500 = 10,000), then runs
logged recalls through the storage layer (MemoryStore.recall, log=True,
the service role under row-level security, random users and two-word
queries) for --seconds at each concurrency, each way in turn, and reports
recalls/s, p50/p99 latency and PostgreSQL's CPU per recall (its processes'
user + system time, from /proc, when it runs on this machine).

    .venv/bin/python bench/recall_commit.py [--database-url URL] [--seconds 10]

The numbers are quoted in docs/schema.md. The service's real targets are
judged by `make bench` (1M memories).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import psutil
from vocabulary import FILLER_WORDS

from memory_service.domain.errors import Contention
from memory_service.domain.models import RecallQuery, Weights
from memory_service.domain.principal import EVERYTHING
from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.memories import MemoryStore
from memory_service.storage.recall_log import RecallLog

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


def postgres_cpu_seconds(postmaster: int | None) -> float | None:
    """User + system CPU of the postmaster and its processes so far (None: not here)."""
    if postmaster is None:
        return None
    try:
        root = psutil.Process(postmaster)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except psutil.Error:
        return None


async def measure(
    owner_url: str,
    users: list[uuid.UUID],
    seconds: float,
    rounds: int,
    interval: float,
    postmaster: int | None,
) -> None:
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
    recall_log = RecallLog(db, interval, 100_000)
    recall_log.start()
    try:
        stores = {
            "sync": MemoryStore(db),
            "async": MemoryStore(db),
            "batched": MemoryStore(db, recall_log=recall_log),
        }
        db.async_recall = True
        for store in stores.values():
            await run(store, users, 4, 1.0)  # warm: plans, caches, the pool
        await recall_log.flush()
        results: dict[tuple[int, str], list[tuple[float, float, float, float]]] = {}
        for _ in range(rounds):
            for concurrency in CONCURRENCY:
                for way, store in stores.items():
                    db.async_recall = way != "sync"
                    cpu = postgres_cpu_seconds(postmaster)
                    started = time.perf_counter()
                    rate, p50, p99 = await run(store, users, concurrency, seconds)
                    await recall_log.flush()  # its writes count in the time and the CPU
                    elapsed = time.perf_counter() - started
                    after = postgres_cpu_seconds(postmaster)
                    recalls = rate * seconds
                    cpu_ms = (
                        (after - cpu) * 1000 / recalls
                        if cpu is not None and after is not None
                        else float("nan")
                    )
                    results.setdefault((concurrency, way), []).append(
                        (recalls / elapsed, p50, p99, cpu_ms)
                    )
        print(
            f"\n== logged recalls, {seconds:.0f} s each, {rounds} rounds in turn (median);"
            f" batched every {interval * 1000:.0f} ms"
        )
        for concurrency in CONCURRENCY:
            for way in stores:
                runs = results[(concurrency, way)]
                rate, p50, p99, cpu_ms = (statistics.median(r[i] for r in runs) for i in range(4))
                print(
                    f"  c={concurrency:2} {way:7}: {rate:7.0f} recalls/s, p50 {p50:6.2f} ms,"
                    f" p99 {p99:6.2f} ms, PostgreSQL CPU {cpu_ms:5.2f} ms a recall"
                )
    finally:
        await recall_log.close()
        await db.close()


async def postmaster_of(owner_url: str) -> int | None:
    """The server's postmaster pid if it runs on this machine."""
    conn = await asyncpg.connect(owner_url)
    try:  # asked while the backend lives: it exits when the connection closes
        parent = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()")).parent()
    except psutil.Error:
        return None
    finally:
        await conn.close()
    return parent.pid if parent is not None and "postgres" in parent.name() else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="owner's URL of a server (default: embedded)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--each", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--interval", type=float, default=0.05, help="the recall log's interval, seconds"
    )
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
        postmaster = await postmaster_of(owner_url)
        await measure(owner_url, users, args.seconds, args.rounds, args.interval, postmaster)


if __name__ == "__main__":
    asyncio.run(main())
