"""What recall's and listing's filters and recall's limit cost (issue 10).

Loads a throwaway database (the embedded PostgreSQL 18 unless
--database-url names a server where the owner may create databases) with
one heavy user (60,000 memories), one measured user (5,000) and background
users, then reports, as the service role under row-level security:

1. whether a GIN index on user_memories.metadata is used for `@>`, as the
   table owner and as the service role (EXPLAIN ANALYZE);
2. ListMemories' and RecallMemories' statements with a metadata filter that
   matches one memory, or none, of the heavy user: time and plan, with and
   without that GIN index;
3. RecallMemories over real gRPC for the measured user at limit 10, 100 and
   500, with and without query text (median of --runs calls).

    .venv/bin/python bench/recall_filters.py [--database-url URL] [--runs 30]

The numbers are quoted in memory_service.proto (RecallMemoriesRequest.limit,
metadata_filter) and docs/schema.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pg
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc
from vocabulary import FILLER_WORDS

from memory_service.config import Settings
from memory_service.domain import ranking
from memory_service.domain.models import MemoryFilter, RecallQuery
from memory_service.domain.principal import EVERYTHING
from memory_service.server import start
from memory_service.storage import memories as memory_sql
from memory_service.storage import migrate, session
from memory_service.storage.database import Database, PoolSettings

HEAVY, MEASURED, BACKGROUND_USERS, BACKGROUND_EACH = 60_000, 5_000, 50, 1_000
GIN = "ix_exp_user_memories_metadata"


def _rows(user: uuid.UUID, count: int, rng: random.Random, now: datetime) -> list[tuple[Any, ...]]:
    rows = []
    for n in range(count):
        words = " ".join(rng.choices(FILLER_WORDS, k=rng.randint(8, 40)))
        updated = now - timedelta(days=rng.random() * 180)
        metadata = {"source": rng.choice(["chat", "import", "plan"]), "unit": {"id": n % 100}}
        metadata["lesson"] = n
        rows.append(
            (
                user,
                words,
                round(rng.random(), 3),
                rng.choice(["preference", "fact", "class_context"]),
                updated - timedelta(days=rng.random() * 30),
                updated,
                json.dumps(metadata),
            )
        )
    return rows


async def load(owner_url: str) -> tuple[uuid.UUID, uuid.UUID]:
    conn = await asyncpg.connect(owner_url)
    try:
        rng, now = random.Random(3), datetime.now(UTC)
        users = []
        for i in range(BACKGROUND_USERS + 2):
            users.append(
                await conn.fetchval(
                    "INSERT INTO users (email) VALUES ($1) RETURNING id", f"u{i}@x.example"
                )
            )
        heavy, measured = users[0], users[1]
        started = time.monotonic()
        plan = [(heavy, HEAVY), (measured, MEASURED)]
        plan += [(u, BACKGROUND_EACH) for u in users[2:]]
        for user, count in plan:  # the term trigger runs on COPY: lexical recall works
            await conn.copy_records_to_table(
                "user_memories",
                records=_rows(user, count, rng, now),
                columns=[
                    "user_id",
                    "content",
                    "importance",
                    "category",
                    "created_at",
                    "updated_at",
                    "metadata",
                ],
            )
        await conn.execute("VACUUM ANALYZE user_memories")
        await conn.execute("VACUUM ANALYZE memory_terms")
        total = await conn.fetchval("SELECT count(*) FROM user_memories")
        print(f"loaded {total} memories in {time.monotonic() - started:.0f} s")
        return heavy, measured
    finally:
        await conn.close()


async def explain(
    url: str, user: uuid.UUID | None, sql: str, args: list[Any], generic: bool
) -> str:
    """EXPLAIN ANALYZE as the role of `url`, acting as `user` (None: no setting)."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            if user is not None:
                await conn.execute("SELECT set_config('faraday.acting_user', $1, true)", str(user))
            if generic:
                await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            # jsonb parameters as text, as the service's codec sends them
            await conn.set_type_codec(
                "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
        return "\n".join(r[0] for r in rows)
    finally:
        await conn.close()


def _summary(plan: str) -> str:
    lines = plan.splitlines()
    uses_gin = GIN in plan
    execution = next((x.strip() for x in lines if x.strip().startswith("Execution Time")), "")
    return f"GIN used: {uses_gin}; {execution}"


async def metadata_plans(owner_url: str, heavy: uuid.UUID, db: Database) -> None:
    app_url = migrate.app_role_url(owner_url)
    probe = "SELECT id FROM user_memories WHERE user_id = $1 AND metadata @> $2::jsonb"
    one = {"lesson": 12345}
    none = {"source": "nowhere"}
    for label, with_gin in (("without GIN", False), ("with GIN (jsonb_path_ops)", True)):
        owner = await asyncpg.connect(owner_url)
        try:
            if with_gin:
                await owner.execute(
                    f"CREATE INDEX IF NOT EXISTS {GIN} ON user_memories"
                    " USING gin (metadata jsonb_path_ops)"
                )
            else:
                await owner.execute(f"DROP INDEX IF EXISTS {GIN}")
            await owner.execute("ANALYZE user_memories")
        finally:
            await owner.close()
        print(f"\n== {label}")
        for who, url, acting in (("owner", owner_url, None), ("service role", app_url, heavy)):
            plan = await explain(url, acting, probe, [heavy, one], generic=False)
            print(f"  probe @> one row, as {who}: {_summary(plan)}")
            if who == "service role" and with_gin:
                print("    " + "\n    ".join(plan.splitlines()[:8]))
        for name, f in (("matches 1", one), ("matches 0", none)):
            lst = memory_sql._LIST
            params = {
                "owner": None,
                "profiles": None,
                "user_id": heavy,
                "assistant_profile_id": None,
                "categories": [],
                "tags": [],
                **memory_sql._shared_filter_params(MemoryFilter(heavy, metadata=f)),
                "after_time": None,
                "after_id": None,
                "limit": 51,
            }
            plan = await explain(app_url, heavy, lst.sql, lst.args(params), generic=False)
            print(f"  ListMemories page, filter {name}: {_summary(plan)}")
            for query in ("", "student lesson"):
                q = RecallQuery(heavy, ranking.DEFAULT_WEIGHTS, query=query, metadata=f)
                timing = await _time_store_recall(db, heavy, q)
                print(f"  recall query={query!r}, filter {name}: median {timing:.1f} ms")
        q = RecallQuery(heavy, ranking.DEFAULT_WEIGHTS)
        print(f"  recall, no filter: median {await _time_store_recall(db, heavy, q):.1f} ms")


async def _time_store_recall(db: Database, user: uuid.UUID, q: RecallQuery, runs: int = 7) -> float:
    store = memory_sql.MemoryStore(db)
    times = []
    with session.acting_as(user):
        for _ in range(runs):
            started = time.perf_counter()
            await store.recall(q, EVERYTHING, log=False)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


async def limits(app_url: str, measured: uuid.UUID, runs: int) -> None:
    server = await start(Settings(port=0, sweep_interval_seconds=0), app_url)
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", options=[("grpc.max_receive_message_length", 64 << 20)]
        ) as channel:
            stub = memory_service_pb2_grpc.MemoryServiceStub(channel)
            print(f"\n== RecallMemories over gRPC, user with {MEASURED} memories, median of {runs}")
            for query in ("", "student lesson"):
                for skip in (False, True):
                    for limit in (10, 100, 500):
                        request = memory_service_pb2.RecallMemoriesRequest(
                            user_id=str(measured),
                            query=query,
                            limit=limit,
                            skip_access_tracking=skip,
                        )
                        await stub.RecallMemories(request)  # warm
                        times, size = [], 0
                        for _ in range(runs):
                            started = time.perf_counter()
                            response = await stub.RecallMemories(request)
                            times.append((time.perf_counter() - started) * 1000)
                            size = response.ByteSize()
                        print(
                            f"  query={query!r:17} skip_access_tracking={skip!s:5}"
                            f" limit={limit:3}: median {statistics.median(times):6.1f} ms,"
                            f" p90 {sorted(times)[int(runs * 0.9)]:6.1f} ms, response {size} B"
                        )
    finally:
        await server.stop(1.0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="owner's URL of a server (default: embedded)")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    async with pg.scratch_database(args.database_url, "faraday-filters") as owner_url:
        conn = await asyncpg.connect(owner_url)
        print("server:", await conn.fetchval("SHOW server_version"))
        await conn.close()
        await migrate.upgrade(owner_url)
        heavy, measured = await load(owner_url)
        app_url = migrate.app_role_url(owner_url)
        db = Database(
            PoolSettings(
                url=app_url,
                platform_url=migrate.platform_role_url(app_url),
                size=3,
                user_size=1,
                max_overflow=0,
            )
        )
        await db.open()
        try:
            await metadata_plans(owner_url, heavy, db)
        finally:
            await db.close()
        await limits(app_url, measured, args.runs)


if __name__ == "__main__":
    asyncio.run(main())
