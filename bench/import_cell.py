"""The import cell: ImportMemories' throughput into the loaded database, and two floors.

Issue 10's target: >= 10,000 memories/s imported into a database already
holding the grid's memories (1M by default). Three measurements of `count`
new memories each, spread over `users` active users, one after the other:

- **service**: one ImportMemories stream to the running service over real
  gRPC, in messages of 1,000 items (pre-serialized before the clock
  starts, so the client's protobuf work is not in the window; what is
  measured is the server's decoding, validation, SQL and commits);
- **direct floor**: the same chunks through the service's own storage
  (storage/imports.py ImportStore.import_chunk, the very statements) and
  `Database`, as faraday_platform acting for all users, with no gRPC and
  no validation: what the service's layers add is the difference;
- **bare insert floor**: only COPY into a staging table and the one
  INSERT ... SELECT into user_memories (its triggers and indexes included),
  per 1,000 rows in a transaction: no dedup, import ids, interactions or
  checks. What remains is the table's own cost per row: the BM25 postings
  trigger, the secondary indexes and the WAL.

Each uses fresh contents and import ids, so every item is created (the
import's main path), and each user's memories come together (count / users
in a row, as an export per teacher would): the service overlaps two chunks
of different users (services/imports.py), the direct floor runs the chunks
one after the other. Time from the first byte to the last commit; CPU of
the server's process tree and of PostgreSQL's over the same window.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import psutil
import vocabulary as vocab
from faraday.memory.v1 import memory_pb2, memory_service_pb2

from memory_service.domain.dedup import DEFAULT_DEDUP
from memory_service.domain.imports import ImportItem
from memory_service.domain.models import NewMemory
from memory_service.storage import session
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.imports import ImportStore
from memory_service.storage.migrate import platform_role_url

CHUNK = 1000
TARGET_PER_SECOND = 10_000


@dataclass
class Fact:
    user_id: uuid.UUID
    import_id: str
    content: str
    category: str
    tags: list[str]
    importance: float
    created_at: datetime
    updated_at: datetime


def facts(user_ids: list[uuid.UUID], count: int, prefix: str, seed: int) -> list[Fact]:
    r = random.Random(seed)
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        category = r.choice(vocab.CATEGORIES)
        created = now - timedelta(days=r.uniform(1, 700))
        out.append(
            Fact(
                # Each user's history in one run, as an export per teacher is.
                user_id=user_ids[n * len(user_ids) // count],
                import_id=f"{prefix}-{n}",
                # The import's own sentence, then an id: unique, so every item is created.
                content=f"{vocab.memory_content(r, category, r.randint(60, 280))} [{prefix} {n}]",
                category=category,
                tags=r.sample(vocab.TAGS, r.randint(0, 3)),
                importance=round(r.random(), 3),
                created_at=created,
                updated_at=created + timedelta(days=r.uniform(0, 1)),
            )
        )
    return out


def _requests(batch: list[Fact]) -> list[bytes]:
    out = [
        memory_service_pb2.ImportMemoriesRequest(
            options=memory_service_pb2.ImportOptions()
        ).SerializeToString()
    ]
    for i in range(0, len(batch), CHUNK):
        items = []
        for f in batch[i : i + CHUNK]:
            memory = memory_pb2.Memory(
                user_id=str(f.user_id),
                content=f.content,
                category=f.category,
                tags=f.tags,
                importance=f.importance,
                source="lms_import",
            )
            memory.create_time.FromDatetime(f.created_at)
            memory.update_time.FromDatetime(f.updated_at)
            items.append(memory_service_pb2.ImportItem(import_id=f.import_id, memory=memory))
        out.append(
            memory_service_pb2.ImportMemoriesRequest(
                items=memory_service_pb2.ImportItems(items=items)
            ).SerializeToString()
        )
    return out


def _items(batch: list[Fact], start: int) -> list[ImportItem]:
    return [
        ImportItem(
            index=start + k,
            import_id=f.import_id,
            memory=NewMemory(
                user_id=f.user_id,
                assistant_profile_id=None,
                content=f.content,
                context={},
                importance=f.importance,
                category=f.category,
                tags=f.tags,
                source="lms_import",
                confidence=None,
                expires_at=None,
                metadata={},
            ),
            created_at=f.created_at,
            updated_at=f.updated_at,
            last_accessed=None,
        )
        for k, f in enumerate(batch)
    ]


class CpuClock:
    """CPU seconds of some process trees between start() and stop()."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self._pids = {k: v for k, v in pids.items() if v}
        self._start: dict[str, float] = {}

    @staticmethod
    def _tree(pid: int) -> float:
        try:
            root = psutil.Process(pid)
            total = 0.0
            for p in [root, *root.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total
        except psutil.Error:
            return 0.0

    def start(self) -> None:
        self._start = {k: self._tree(pid) for k, pid in self._pids.items()}

    def stop(self) -> dict[str, float]:
        return {k: self._tree(pid) - self._start[k] for k, pid in self._pids.items()}


async def _service(address: str, requests: list[bytes]) -> tuple[float, bytes]:
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_send_message_length", 16 * 1024 * 1024)]
    ) as channel:
        method = channel.stream_unary(
            "/faraday.memory.v1.MemoryService/ImportMemories",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )

        async def gen() -> Any:
            for r in requests:
                yield r

        started = time.perf_counter()
        response = await method(gen(), timeout=3600)
        return time.perf_counter() - started, response


_BARE_STAGING = """
CREATE TEMPORARY TABLE bare_staging (
    user_id uuid, content text, importance float8, category text, tags text[], source text,
    created_at timestamptz, updated_at timestamptz) ON COMMIT DROP
"""
_BARE_INSERT = """
INSERT INTO user_memories (user_id, content, importance, category, tags, source,
                           created_at, updated_at)
SELECT user_id, content, importance, category, tags, source, created_at, updated_at
FROM bare_staging
"""


async def _breakdown(db: Database, batch: list[Fact]) -> dict[str, float]:
    """Where one chunk's bare INSERT spends its time: EXPLAIN ANALYZE's trigger lines (ms)."""
    rows = [
        (f.user_id, f.content, f.importance, f.category, f.tags, "lms_import",
         f.created_at, f.updated_at)
        for f in batch
    ]  # fmt: skip
    async with db.connection() as c:
        await c.execute(_BARE_STAGING)
        await c.copy_records_to_table("bare_staging", records=rows)
        plan = [r[0] for r in await c.fetch("EXPLAIN (ANALYZE, BUFFERS) " + _BARE_INSERT)]
    out: dict[str, float] = {"rows": float(len(rows))}
    for line in plan:
        if line.startswith("Trigger "):
            name = line.split(":")[0].removeprefix("Trigger ")
            out[name] = float(line.split("time=")[1].split()[0])
        elif line.startswith("Execution Time:"):
            out["total"] = float(line.split()[2])
    return out


async def measure(
    owner_url: str,
    app_url: str,
    address: str,
    *,
    count: int,
    users: int,
    pg_pid: int | None,
    server_pid: int | None,
    seed: int = 10,
) -> dict[str, Any]:
    conn = await asyncpg.connect(owner_url)
    try:
        user_ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM users WHERE is_active ORDER BY id LIMIT $1", users
            )
        ]
        held = await conn.fetchval("SELECT count(*) FROM user_memories")
    finally:
        await conn.close()
    run = uuid.uuid4().hex[:6]
    service_facts = facts(user_ids, count, f"svc{run}", seed)
    floor_facts = facts(user_ids, count, f"flr{run}", seed + 1)
    bare_facts = facts(user_ids, count, f"bare{run}", seed + 2)
    requests = _requests(service_facts)
    out: dict[str, Any] = {
        "memories_before": held,
        "count": count,
        "users": len(user_ids),
        "chunk": CHUNK,
        "target_per_second": TARGET_PER_SECOND,
    }
    # "self": this process, which is the direct floors' whole client side.
    clock = CpuClock({"server": server_pid, "postgres": pg_pid, "self": os.getpid()})

    clock.start()
    elapsed, raw = await _service(address, requests)
    cpu = clock.stop()
    response = memory_service_pb2.ImportMemoriesResponse.FromString(raw)
    out["service"] = {
        "seconds": elapsed,
        "per_second": count / elapsed,
        "created": response.created,
        "deduplicated": response.deduplicated,
        "rejected": response.rejected,
        "cpu_s": cpu,
    }

    db = Database(
        PoolSettings(
            url=app_url,
            platform_url=platform_role_url(app_url),
            size=2,
            user_size=1,
            max_overflow=0,
            statement_timeout_seconds=600,
        )
    )
    await db.open()
    try:
        has_vectors = bool(
            await db.fetchrow("SELECT to_regclass('memory_embeddings') IS NOT NULL AS v")
        )
        store = ImportStore(db, vectors=has_vectors)
        chunks = [_items(floor_facts[i : i + CHUNK], i) for i in range(0, count, CHUNK)]
        with session.acting_as(session.ALL_USERS):
            clock.start()
            started = time.perf_counter()
            created = 0
            for chunk in chunks:
                results = await store.import_chunk(chunk, DEFAULT_DEDUP)
                created += sum(1 for r in results if r.outcome.value == "created")
            elapsed = time.perf_counter() - started
            cpu = clock.stop()
            out["direct_floor"] = {
                "seconds": elapsed,
                "per_second": count / elapsed,
                "created": created,
                "cpu_s": cpu,
            }
            rows = [
                (f.user_id, f.content, f.importance, f.category, f.tags, "lms_import",
                 f.created_at, f.updated_at)
                for f in bare_facts
            ]  # fmt: skip
            clock.start()
            started = time.perf_counter()
            for i in range(0, count, CHUNK):
                async with db.connection() as c:
                    await c.execute(_BARE_STAGING)
                    await c.copy_records_to_table("bare_staging", records=rows[i : i + CHUNK])
                    await c.execute(_BARE_INSERT)
            elapsed = time.perf_counter() - started
            cpu = clock.stop()
            out["bare_insert_floor"] = {
                "seconds": elapsed,
                "per_second": count / elapsed,
                "cpu_s": cpu,
            }
            out["breakdown"] = await _breakdown(db, facts(user_ids, CHUNK, f"expl{run}", seed + 3))
    finally:
        await db.close()
    return out
