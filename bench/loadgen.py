"""The load generator: its own process, driving one target at a time.

The driver (bench/run.py) starts it once and sends one JSON command per line
on stdin; each answer is one JSON line on stdout. A `run` command drives one
cell: an RPC kind against a target at a concurrency, `concurrency` tasks
each issuing calls back to back for `warmup` seconds, then for `duration`
seconds during which every completed call's latency is kept. At the window's
start and end it reads the CPU time of the server's process tree and of
PostgreSQL's, and it samples the server's RSS throughout.

Targets:
  grpc     a gRPC server at `address` (the service, or the grpc floor): one
           grpc.aio channel, the generated stub, a 10 s deadline per call.
  asyncpg  no gRPC at all: the same statements as the grpc floor
           (bench/floor_sql.py) through the service's `Database`, in this
           process. Its "server" CPU is this process's own.
  redis    no gRPC: GET of the service's cache key and json.loads of the entry,
           what the redis floor does before building its message.

Request pools are built before the window from the workload file written by
the driver (bench/dataset.py `workload`), so the window spends its CPU on
calls, not on building requests. The caller-sent query vectors of
`recall_vector` are computed there too, with the built-in model the
semantic service runs (SEMANTIC_MODEL), as a caller would before calling.
The server-side embedding of `recall_embed` and `store_embed` is part of
the call: the direct floor embeds in the window, through the service's own
`Semantics.embed` and batching front, as the service and the grpc floor do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import floor_sql
import grpc
import numpy as np
import psutil
from dataset import SEMANTIC_KINDS, SEMANTIC_MODEL
from faraday.memory.v1 import (
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)

from memory_service import config
from memory_service.server import pool_settings
from memory_service.services.semantics import Semantics, semantics_from_settings
from memory_service.storage import cache, session
from memory_service.storage.database import Database
from memory_service.storage.migrate import platform_role_url
from memory_service.storage.recall_log import RecallLog

CALL_TIMEOUT_SECONDS = 10.0
EXPLAIN_TIMEOUT_S = 600
POOL_SIZE = 4096

# rpc kind -> (service, method)
METHODS = {
    "recall": ("memory", "RecallMemories"),
    "recall_query": ("memory", "RecallMemories"),
    "recall_vector": ("memory", "RecallMemories"),
    "recall_embed": ("memory", "RecallMemories"),
    "recall_nolog": ("memory", "RecallMemories"),
    "recall_query_nolog": ("memory", "RecallMemories"),
    "recall_one_user": ("memory", "RecallMemories"),
    "probe_recall": ("memory", "RecallMemories"),
    "probe_recall_query": ("memory", "RecallMemories"),
    "probe_recall_vector": ("memory", "RecallMemories"),
    "store": ("memory", "StoreMemory"),
    "store_embed": ("memory", "StoreMemory"),
    "feedback": ("memory", "RecordFeedback"),
    "get_lesson": ("lesson", "GetLesson"),
    "get_lesson_cached": ("lesson", "GetLesson"),
    "list_lessons": ("lesson", "ListLessons"),
    "search_lessons": ("lesson", "SearchLessons"),
}


def query_vectors(w: dict[str, Any]) -> list[list[float]]:
    """The workload's queries embedded with SEMANTIC_MODEL: what a caller would send."""
    if "_query_vectors" not in w:
        from memory_service.embedding import load_model

        vectors = load_model(SEMANTIC_MODEL).embed(w["queries"])
        if not np.abs(vectors).sum(axis=1).all():
            raise ValueError("a workload query has no known word, so no vector")
        w["_query_vectors"] = vectors.tolist()
    vectors: list[list[float]] = w["_query_vectors"]
    return vectors


def build_requests(kind: str, w: dict[str, Any]) -> list[Any]:
    """POOL_SIZE requests of one kind, drawn from the workload (deterministic)."""
    n = POOL_SIZE
    if kind in ("recall", "recall_nolog"):
        return [
            memory_service_pb2.RecallMemoriesRequest(user_id=u, limit=10)
            for u in w["recall_users"][:n]
        ]
    if kind in ("recall_query", "recall_query_nolog", "recall_embed"):
        return [
            memory_service_pb2.RecallMemoriesRequest(user_id=u, query=q, limit=10)
            for u, q in zip(w["recall_users"][:n], w["queries"], strict=False)
        ]
    if kind == "recall_vector":  # hybrid: the query text and the caller's vector of it
        return [
            memory_service_pb2.RecallMemoriesRequest(
                user_id=u,
                query=q,
                limit=10,
                query_embedding=v,
                embedding_model=SEMANTIC_MODEL,
            )
            for u, q, v in zip(w["recall_users"][:n], w["queries"], query_vectors(w), strict=False)
        ]
    probes = w["probe_users"]
    if kind == "recall_one_user":  # concurrent recalls of one teacher (several assistants)
        return [memory_service_pb2.RecallMemoriesRequest(user_id=probes[0], limit=10)]
    if kind == "probe_recall":  # worker k of 16 always asks for probe user k
        return [memory_service_pb2.RecallMemoriesRequest(user_id=u, limit=10) for u in probes]
    if kind in ("probe_recall_query", "probe_recall_vector"):
        requests = [
            memory_service_pb2.RecallMemoriesRequest(
                user_id=probes[i % len(probes)], query=w["queries"][i // len(probes)], limit=10
            )
            for i in range(len(probes) * 64)
        ]
        if kind == "probe_recall_vector":  # hybrid: with the caller's vector of the query
            vectors = query_vectors(w)
            for i, request in enumerate(requests):
                request.query_embedding.extend(vectors[i // len(probes)])
                request.embedding_model = SEMANTIC_MODEL
        return requests
    if kind in ("store", "store_embed"):
        requests = []
        for i, user in enumerate(w["store_users"][:n]):
            m = w["store_memories"][i % len(w["store_memories"])]
            memory = memory_pb2.Memory(
                user_id=user,
                content=m["content"],
                category=m["category"],
                importance=m["importance"],
                tags=m["tags"],
                source=m["source"],
                assistant_profile_id=m["assistant_profile_id"],
            )
            memory.context.update(m["context"])
            requests.append(memory_service_pb2.StoreMemoryRequest(memory=memory))
        return requests
    if kind == "feedback":
        requests = []
        for i, memory_id in enumerate(w["memory_ids"][:n]):
            request = memory_service_pb2.RecordFeedbackRequest(memory_id=memory_id)
            if i % 3 == 2:
                request.rating = 1 + i % 5
            else:
                request.helpful = i % 4 != 0
            if i % 2:
                request.comment = "Useful for planning the next unit."
            requests.append(request)
        return requests
    if kind == "get_lesson":
        return [lesson_service_pb2.GetLessonRequest(id=i) for i in w["lesson_ids"][:n]]
    if kind == "get_lesson_cached":
        return [lesson_service_pb2.GetLessonRequest(id=i) for i in w["hot_lesson_ids"]]
    if kind == "list_lessons":
        return [
            lesson_service_pb2.ListLessonsRequest(user_id=u, page_size=20)
            for u in w["lesson_owners"][:n]
        ]
    if kind == "search_lessons":
        return [
            lesson_service_pb2.SearchLessonsRequest(query=q, page_size=10)
            for q in w["lesson_queries"][:n]
        ]
    raise ValueError(f"unknown rpc kind {kind!r}")


def _sql_call(
    kind: str, db: Database, semantics: Semantics | None, recall_log: RecallLog | None
) -> Callable[[Any], Awaitable[Any]]:
    """The asyncpg floor of one kind: the statement, prepared from the request beforehand.

    Except where the server embeds (`*_embed`): the embedding is part of the
    call, so it happens in the window, then the statement is built as the
    grpc floor builds it.
    """
    if kind in ("recall_embed", "store_embed"):
        assert semantics is not None
        return _embedding_sql_call(kind, db, semantics, recall_log)
    if kind == "feedback":
        return _feedback_sql_call(db)
    if kind.startswith("recall"):
        log = not kind.endswith("_nolog")

        def prepare_recall(request: Any) -> Any:
            embedding = floor_sql.query_embedding(request)
            return floor_sql.prepare_recall(request, log, embedding, recall_log)

        async def recall(prepared: Any) -> Any:
            return await floor_sql.run_recall(db, prepared)

        recall.prepare = prepare_recall  # type: ignore[attr-defined]
        return recall
    to_sql: dict[str, Callable[[Any], floor_sql.Statement]] = {
        "store": floor_sql.store,
        "get_lesson": floor_sql.get_lesson,
        "list_lessons": floor_sql.list_lessons,
        "search_lessons": floor_sql.search_lessons,
    }
    single = kind in ("store", "get_lesson")
    generic_plan = kind == "search_lessons"  # as the service
    read_only = kind != "store"  # the lesson reads: COMMIT off the path, as the service
    convert = to_sql[kind]

    def prepare(request: Any) -> Any:
        return convert(request)

    async def call(prepared: Any) -> Any:
        sql, args = prepared
        if single:
            return await db.fetchrow(sql, *args, read_only=read_only)
        return await db.fetch(sql, *args, generic_plan=generic_plan, read_only=read_only)

    call.prepare = prepare  # type: ignore[attr-defined]
    return call


def _feedback_sql_call(db: Database) -> Callable[[Any], Awaitable[Any]]:
    """RecordFeedback as the service runs it for a service token: the memory's
    owner, then the feedback statement, in one transaction."""

    async def call(request: Any) -> Any:
        async with db.connection() as conn:
            owner = await conn.fetchval(floor_sql.OWNER_OF_MEMORY, request.memory_id)
            sql, args = floor_sql.feedback(request, owner)
            return await conn.fetchrow(sql, *args)

    call.prepare = lambda request: request  # type: ignore[attr-defined]
    return call


def _embedding_sql_call(
    kind: str, db: Database, semantics: Semantics, recall_log: RecallLog | None
) -> Callable[[Any], Awaitable[Any]]:
    async def call(request: Any) -> Any:
        if kind == "store_embed":
            embedding = await semantics.embed(request.memory.content)
            sql, args = floor_sql.store(request, embedding)
            return await db.fetchrow(sql, *args)
        embedding = await semantics.embed(request.query)
        prepared = floor_sql.prepare_recall(request, True, embedding, recall_log)
        return await floor_sql.run_recall(db, prepared)

    call.prepare = lambda request: request  # type: ignore[attr-defined]
    return call


class Targets:
    """Open channels, pools and clients, reused across cells."""

    def __init__(self) -> None:
        self.channels: dict[str, grpc.aio.Channel] = {}
        self.databases: dict[str, Database] = {}
        self.redis: dict[str, Any] = {}
        self.recall_logs: dict[str, RecallLog] = {}  # by database URL, as the service's
        self.semantics: Semantics | None = None
        self.workloads: dict[str, dict[str, Any]] = {}

    def workload(self, path: str) -> dict[str, Any]:
        if path not in self.workloads:
            with open(path) as f:
                self.workloads[path] = json.load(f)
        return self.workloads[path]

    async def grpc_call(self, address: str, kind: str) -> Callable[[Any], Awaitable[Any]]:
        channel = self.channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address)
            await asyncio.wait_for(channel.channel_ready(), 30)
            self.channels[address] = channel
        service, method = METHODS[kind]
        stub: Any = (
            memory_service_pb2_grpc.MemoryServiceStub(channel)
            if service == "memory"
            else lesson_service_pb2_grpc.LessonServiceStub(channel)
        )
        rpc = getattr(stub, method)

        async def call(request: Any) -> Any:
            return await rpc(request, timeout=CALL_TIMEOUT_SECONDS)

        return call

    async def sql_call(self, url: str, kind: str) -> Callable[[Any], Awaitable[Any]]:
        db = self.databases.get(url)
        if db is None:
            settings = config.load()
            db = Database(pool_settings(settings, url, platform_role_url(url)))
            await db.open()
            self.databases[url] = db
            recall_log = floor_sql.recall_log(settings, db)
            if recall_log is not None:
                self.recall_logs[url] = recall_log
        if kind in SEMANTIC_KINDS and self.semantics is None:  # loaded as the service loads it
            settings = config.load().with_overrides(embedding_model=SEMANTIC_MODEL)
            self.semantics = await asyncio.to_thread(semantics_from_settings, settings, True)
        return _sql_call(kind, db, self.semantics, self.recall_logs.get(url))

    async def redis_call(self, url: str) -> Callable[[Any], Awaitable[Any]]:
        from floor_server import redis_client

        client = self.redis.get(url)
        if client is None:
            client = redis_client(url, config.load().redis_timeout_seconds)
            self.redis[url] = client

        async def call(request: Any) -> Any:
            raw = await client.get(cache.key(request.id))
            if not raw:
                raise LookupError(f"lesson {request.id} is not cached")
            return json.loads(raw)

        return call

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()
        for recall_log in self.recall_logs.values():
            await recall_log.close()
        for db in self.databases.values():
            await db.close()
        for client in self.redis.values():
            await client.aclose()
        if self.semantics is not None:
            await self.semantics.close()
        self.channels, self.databases, self.redis, self.recall_logs = {}, {}, {}, {}
        self.semantics = None


def _tree(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            found += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return found


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    times = {}
    for p in processes:
        try:
            t = p.cpu_times()
            times[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return times


def _rss(processes: list[psutil.Process]) -> float:
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


async def run_cell(targets: Targets, cmd: dict[str, Any]) -> dict[str, Any]:
    kind = cmd["rpc"]
    requests = build_requests(kind, targets.workload(cmd["workload"]))
    target = cmd["target"]
    if target == "grpc":
        call = await targets.grpc_call(cmd["address"], kind)
        items = requests
    elif target == "asyncpg":
        call = await targets.sql_call(cmd["database_url"], kind)
        items = [call.prepare(r) for r in requests]  # type: ignore[attr-defined]
    elif target == "redis":
        call = await targets.redis_call(cmd["redis_url"])
        items = requests
    else:
        raise ValueError(f"unknown target {target!r}")

    concurrency = int(cmd["concurrency"])
    server_pids = cmd.get("server_pids") or [os.getpid()]
    pg_pids = [cmd["pg_pid"]] if cmd.get("pg_pid") else []
    helper_pids = cmd.get("helper_pids") or []  # redis-server: not noise, not the server
    latencies: list[float] = []
    errors: list[str] = []
    counts = {"calls": 0, "errors": 0}
    start = time.perf_counter()
    window_start = start + float(cmd["warmup"])
    window_end = window_start + float(cmd["duration"])

    async def worker(offset: int) -> None:
        i = offset
        n = len(items)
        perf = time.perf_counter
        while True:
            item = items[i % n]
            i += concurrency
            t0 = perf()
            if t0 >= window_end:
                return
            try:
                await call(item)
                ok = True
            except Exception as exc:  # counted (warm-up included), reported, never fatal
                ok = False
                counts["errors"] += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            t1 = perf()
            if ok and t0 >= window_start and t1 <= window_end:
                latencies.append(t1 - t0)
                counts["calls"] += 1

    monitor: dict[str, Any] = {"rss": 0.0}

    async def watch() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        servers, pgs, helpers = _tree(server_pids), _tree(pg_pids), _tree(helper_pids)
        monitor["cpu0"] = _cpu(servers)
        monitor["pg0"] = _cpu(pgs)
        monitor["helpers0"] = _cpu(helpers)
        monitor["machine0"] = psutil.cpu_times()
        monitor["self0"] = time.process_time()
        monitor["t0"] = time.perf_counter()
        while time.perf_counter() < window_end - 0.2:
            monitor["rss"] = max(monitor["rss"], _rss(servers))
            await asyncio.sleep(0.2)
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        monitor["t1"] = time.perf_counter()
        monitor["cpu1"] = _cpu(_tree(server_pids))
        monitor["pg1"] = _cpu(_tree(pg_pids))
        monitor["helpers1"] = _cpu(_tree(helper_pids))
        monitor["machine1"] = psutil.cpu_times()
        monitor["self1"] = time.process_time()
        monitor["rss"] = max(monitor["rss"], _rss(servers))

    await asyncio.gather(watch(), *(worker(k) for k in range(concurrency)))
    window = monitor["t1"] - monitor["t0"]
    calls = counts["calls"]
    result: dict[str, Any] = {
        "calls": calls,
        "errors": counts["errors"],
        "error_samples": errors,
        "window_s": round(window, 3),
        "throughput": calls / window if window > 0 else 0.0,
        "server_cpu_s": _delta(monitor["cpu0"], monitor["cpu1"]),
        "pg_cpu_s": _delta(monitor["pg0"], monitor["pg1"]),
        "loadgen_cpu_s": monitor["self1"] - monitor["self0"],
        "server_rss_mb": monitor["rss"],
    }
    # Whatever else ran on the machine in the window (other sessions, the
    # kernel, the hypervisor's steal): the noise that makes a cell unreliable.
    before, after = monitor["machine0"], monitor["machine1"]
    busy = sum(
        getattr(after, f) - getattr(before, f)
        for f in ("user", "nice", "system", "irq", "softirq")
        if hasattr(after, f)
    )
    ours = (
        result["server_cpu_s"]
        + result["pg_cpu_s"]
        + result["loadgen_cpu_s"]
        + _delta(monitor["helpers0"], monitor["helpers1"])
    )
    if target == "asyncpg":  # the floor runs in this process: its CPU is the "server" CPU
        result["server_cpu_s"] = result["loadgen_cpu_s"]
        ours -= result["loadgen_cpu_s"]  # counted once: server and load generator are one
    result["other_cpu_s"] = max(0.0, busy - ours)
    result["steal_s"] = getattr(after, "steal", 0.0) - getattr(before, "steal", 0.0)
    result["latencies_us"] = [round(x * 1e6) for x in latencies]
    if calls:
        ms = np.array(latencies) * 1000.0
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        result |= {
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "mean_ms": float(ms.mean()),
            "max_ms": float(ms.max()),
            "server_cpu_ms_per_call": result["server_cpu_s"] * 1000 / calls,
            "pg_cpu_ms_per_call": result["pg_cpu_s"] * 1000 / calls,
            "loadgen_cpu_ms_per_call": result["loadgen_cpu_s"] * 1000 / calls,
        }
    return result


SCORE_PARTS = ("score", "importance_score", "recency_score", "relevance_score", "semantic_score")
VERIFIED_KINDS = ("recall", "recall_query", "get_lesson", "list_lessons", "search_lessons")
# Asked of the service and the grpc floor that run SEMANTIC_MODEL.
VERIFIED_SEMANTIC_KINDS = ("recall_vector", "recall_embed")


def _difference(kind: str, service: Any, floor: Any) -> str | None:
    """None if the floor answered as the service did (what may differ between calls aside)."""
    if kind.startswith("recall"):
        a, b = list(service.memories), list(floor.memories)
        if len(a) != len(b):
            return f"{len(a)} memories from the service, {len(b)} from the floor"
        for x, y in zip(a, b, strict=True):
            # last_access_time moves with every logged recall, recency with the clock.
            for m in (x, y):
                m.memory.ClearField("last_access_time")
            if x.memory != y.memory:
                return f"memory {x.memory.id} vs {y.memory.id} differs"
            for part in SCORE_PARTS:
                if abs(getattr(x, part) - getattr(y, part)) > 1e-5:
                    return f"memory {x.memory.id}: {part} {getattr(x, part)} vs {getattr(y, part)}"
        return None
    if kind == "list_lessons":
        same = list(service.lessons) == list(floor.lessons)
        return None if same else "the lessons differ"
    if kind == "search_lessons":
        a = [(m.lesson, round(m.rank, 9)) for m in service.matches]
        b = [(m.lesson, round(m.rank, 9)) for m in floor.matches]
        return None if a == b else "the matches differ"
    return None if service == floor else "the lesson differs"


async def verify(targets: Targets, cmd: dict[str, Any]) -> dict[str, Any]:
    """Ask the service and the grpc floor the same few questions; compare the answers."""
    w = targets.workload(cmd["workload"])
    found: dict[str, Any] = {}
    pairs = [(kind, cmd["service"], cmd["floor"]) for kind in VERIFIED_KINDS]
    if cmd.get("semantic_service"):
        pairs += [
            (kind, cmd["semantic_service"], cmd["semantic_floor"])
            for kind in VERIFIED_SEMANTIC_KINDS
        ]
    for kind, service_address, floor_address in pairs:
        service = await targets.grpc_call(service_address, kind)
        floor = await targets.grpc_call(floor_address, kind)
        same, differences = 0, []
        requests = build_requests(kind, w)[: int(cmd.get("requests", 5))]
        for request in requests:
            try:
                difference = _difference(kind, await service(request), await floor(request))
            except Exception as exc:
                difference = f"{type(exc).__name__}: {str(exc)[:200]}"
            if difference is None:
                same += 1
            elif len(differences) < 2:
                differences.append(difference)
        found[kind] = {"same": same, "asked": len(requests), "differences": differences}
    return found


async def explain(targets: Targets, cmd: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the recall statements for one user, as the service role.

    As the service queries for a service token: faraday_platform acting for
    all users, through the service's Database (BEGIN + set_config), with the
    user's most common term as the query text; with `semantic`, the hybrid
    statement too, with the caller's vector of that term. Each runs twice
    (the plan of the second, with warm caches, is kept) and for real: it
    logs its recall, as a recall would; a run of over 10 s is not repeated.
    asyncpg's extended protocol makes
    them custom plans for these values, as the service's first five
    executions of a prepared statement are.
    """
    url = cmd["database_url"]
    await targets.sql_call(url, "recall_vector" if cmd.get("semantic") else "recall_query")
    db = targets.databases[url]
    user = cmd["user_id"]
    common = await db.fetchrow(
        "SELECT lexeme, count(*) AS docs FROM memory_terms WHERE user_id = $1::uuid"
        " GROUP BY lexeme ORDER BY count(*) DESC, lexeme LIMIT 1",
        user,
    )
    word = common["lexeme"] if common else "student"
    request = memory_service_pb2.RecallMemoriesRequest(user_id=user, query=word, limit=10)
    cases: list[tuple[str, Any]] = [("recall_query", request)]
    if cmd.get("semantic"):
        vector = query_vectors({"queries": [word]})[0]
        cases.append(
            (
                "recall_vector",
                memory_service_pb2.RecallMemoriesRequest(
                    user_id=user,
                    query=word,
                    limit=10,
                    query_embedding=vector,
                    embedding_model=SEMANTIC_MODEL,
                ),
            )
        )
    plans = []
    for kind, r in cases:
        sql, args = floor_sql.recall(r, True, floor_sql.query_embedding(r))
        lines: list[str] = []
        for _ in range(2):
            started = time.perf_counter()
            try:
                async with db.connection() as conn:
                    # Past the service's own statement timeout: the plan of a
                    # slow recall is the point.
                    await conn.execute(f"SET LOCAL statement_timeout = '{EXPLAIN_TIMEOUT_S}s'")
                    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
                lines = [row[0] for row in rows]
            except Exception as exc:
                lines = [f"failed after {time.perf_counter() - started:.1f} s: {exc}"]
                break
            if time.perf_counter() - started > 10:  # slow enough: once is enough
                break
        plans.append(
            {
                "rpc": kind,
                "user_id": user,
                "query": word,
                "query_docs": int(common["docs"]) if common else None,
                "role": "faraday_platform",
                "plan": lines,
            }
        )
    return {"plans": plans}


async def main() -> None:
    session.acting_user.set(session.ALL_USERS)  # the asyncpg floor acts as the service does
    targets = Targets()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            if cmd["op"] == "run":
                answer = await run_cell(targets, cmd)
            elif cmd["op"] == "verify":
                answer = await verify(targets, cmd)
            elif cmd["op"] == "explain":
                answer = await explain(targets, cmd)
            elif cmd["op"] == "close":
                await targets.close()
                answer = {"closed": True}
            else:
                raise ValueError(f"unknown op {cmd['op']!r}")
        except Exception as exc:
            answer = {"failed": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    await targets.close()


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import uvloop

    uvloop.run(main())
