"""The grpc floor: a minimal grpc.aio server doing the service's SQL and nothing else.

    .venv/bin/python bench/floor_server.py --mode sql --port 50061 --database-url APP_URL
    .venv/bin/python bench/floor_server.py --mode redis --port 50062 --redis-url redis://...

`--mode sql` implements RecallMemories, StoreMemory, RecordFeedback,
GetLesson, ListLessons and SearchLessons with the generated servicer base
classes and the same messages as the service, but no interceptor, no
validation, no domain objects and no error mapping: each handler marks the
transaction as acting for all users (what the service does without auth),
turns the request into the service's own statement (bench/floor_sql.py,
which imports it from memory_service.storage), runs it through the
service's `Database` (same pool settings, same BEGIN + set_config and
COMMIT per call) and builds the response straight from the rows.

With FARADAY_EMBEDDING_MODEL set to a built-in model, as for the service,
it loads that model behind the service's own batching front (one worker
thread, `Semantics.embed` from memory_service.services.semantics) and
embeds what the service embeds: each stored memory's content, and a recall's
query text when the caller sent no vector. A caller's vector is used as sent.

`--mode redis` answers GetLesson from Redis with nothing else: GET of the
service's own cache key (memory_service.storage.cache.key), json.loads of
the entry the service wrote (the cache's JSON codec), and the message built
straight from that dict. So it reads exactly what the service cached and
does the same decoding work, minus the service's domain object and layers;
the benchmark warms the cache through the service first.

`--mode canned` is the ceiling of an RPC on this machine: RecallMemories,
ListLessons and SearchLessons answer their first call as `--mode sql` does,
then return that same message to every call, with no SQL at all. What it
reaches is what gRPC, protobuf and the load generator alone allow here; no
service doing any database work per call can go faster.

All run on uvloop with the service's garbage collector settings
(server.settle_garbage_collector), as the service does. `--workers N` starts N processes on
one port (SO_REUSEPORT), like `memory-service serve --workers N`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import floor_sql
import grpc
from faraday.memory.v1 import (
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)

from memory_service import config
from memory_service.server import pool_settings, settle_garbage_collector
from memory_service.services.semantics import Semantics, semantics_from_settings
from memory_service.storage import cache, session
from memory_service.storage.database import Database
from memory_service.storage.migrate import platform_role_url
from memory_service.storage.recall_log import RecallLog

Context = grpc.aio.ServicerContext[Any, Any]


class MemoryFloor(memory_service_pb2_grpc.MemoryServiceServicer):
    def __init__(
        self,
        db: Database,
        log_recalls: bool,
        semantics: Semantics | None,
        recall_log: RecallLog | None,
    ) -> None:
        self._db = db
        self._log = log_recalls
        self._semantics = semantics
        self._recall_log = recall_log

    async def RecallMemories(
        self, request: memory_service_pb2.RecallMemoriesRequest, context: Context
    ) -> memory_service_pb2.RecallMemoriesResponse:
        session.acting_user.set(session.ALL_USERS)
        embedding = floor_sql.query_embedding(request)
        if embedding is None and self._semantics is not None:
            embedding = await self._semantics.embed(request.query)
        prepared = floor_sql.prepare_recall(request, self._log, embedding, self._recall_log)
        return floor_sql.recall_response(await floor_sql.run_recall(self._db, prepared))

    async def StoreMemory(
        self, request: memory_service_pb2.StoreMemoryRequest, context: Context
    ) -> memory_pb2.Memory:
        session.acting_user.set(session.ALL_USERS)
        embedding = None
        if self._semantics is not None:
            embedding = await self._semantics.embed(request.memory.content)
        sql, args = floor_sql.store(request, embedding)
        row = await self._db.fetchrow(sql, *args)
        assert row is not None
        return floor_sql.memory(row)

    async def RecordFeedback(
        self, request: memory_service_pb2.RecordFeedbackRequest, context: Context
    ) -> memory_service_pb2.RecordFeedbackResponse:
        session.acting_user.set(session.ALL_USERS)
        async with self._db.connection() as conn:
            owner = await conn.fetchval(floor_sql.OWNER_OF_MEMORY, request.memory_id)
            sql, args = floor_sql.feedback(request, owner)
            row = await conn.fetchrow(sql, *args)
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such memory")
        return floor_sql.feedback_response(row)


class CannedMemoryFloor(MemoryFloor):
    """RecallMemories answered once from SQL, then from that answer alone (--mode canned)."""

    _canned: memory_service_pb2.RecallMemoriesResponse | None = None

    async def RecallMemories(
        self, request: memory_service_pb2.RecallMemoriesRequest, context: Context
    ) -> memory_service_pb2.RecallMemoriesResponse:
        if self._canned is None:
            self._canned = await super().RecallMemories(request, context)
        return self._canned


class LessonFloor(lesson_service_pb2_grpc.LessonServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

    async def GetLesson(
        self, request: lesson_service_pb2.GetLessonRequest, context: Context
    ) -> lesson_pb2.Lesson:
        session.acting_user.set(session.ALL_USERS)
        sql, args = floor_sql.get_lesson(request)
        row = await self._db.fetchrow(sql, *args, read_only=True)  # as the service
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such lesson")
        return floor_sql.lesson(row)

    async def ListLessons(
        self, request: lesson_service_pb2.ListLessonsRequest, context: Context
    ) -> lesson_service_pb2.ListLessonsResponse:
        session.acting_user.set(session.ALL_USERS)
        sql, args = floor_sql.list_lessons(request)
        return floor_sql.lessons_response(
            await self._db.fetch(sql, *args, read_only=True), request.page_size
        )

    async def SearchLessons(
        self, request: lesson_service_pb2.SearchLessonsRequest, context: Context
    ) -> lesson_service_pb2.SearchLessonsResponse:
        session.acting_user.set(session.ALL_USERS)
        sql, args = floor_sql.search_lessons(request)
        rows = await self._db.fetch(sql, *args, generic_plan=True, read_only=True)  # as the service
        return floor_sql.search_response(rows, request.page_size)


class CannedLessonFloor(LessonFloor):
    """ListLessons and SearchLessons answered once from SQL, then from that answer
    alone (--mode canned): the same lessons in every response, no SQL."""

    _list: lesson_service_pb2.ListLessonsResponse | None = None
    _search: lesson_service_pb2.SearchLessonsResponse | None = None

    async def ListLessons(
        self, request: lesson_service_pb2.ListLessonsRequest, context: Context
    ) -> lesson_service_pb2.ListLessonsResponse:
        if self._list is None:
            self._list = await super().ListLessons(request, context)
        return self._list

    async def SearchLessons(
        self, request: lesson_service_pb2.SearchLessonsRequest, context: Context
    ) -> lesson_service_pb2.SearchLessonsResponse:
        if self._search is None:
            self._search = await super().SearchLessons(request, context)
        return self._search


class RedisLessonFloor(lesson_service_pb2_grpc.LessonServiceServicer):
    def __init__(self, redis: Any) -> None:
        self._redis = redis

    async def GetLesson(
        self, request: lesson_service_pb2.GetLessonRequest, context: Context
    ) -> lesson_pb2.Lesson:
        raw = await self._redis.get(cache.key(request.id))
        if not raw:
            await context.abort(grpc.StatusCode.NOT_FOUND, "not cached")
        return floor_sql.lesson(json.loads(raw))


def redis_client(url: str, timeout_seconds: float) -> Any:
    """A client configured as the service's LessonCache configures its own."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )


async def serve(args: argparse.Namespace) -> None:
    settings = config.load()
    reuse = 1 if args.workers > 1 or args.reuse_port else 0
    server = grpc.aio.server(options=[("grpc.so_reuseport", reuse)])
    closers = []
    if args.mode in ("sql", "canned"):
        db = Database(
            pool_settings(settings, args.database_url, platform_role_url(args.database_url))
        )
        await db.open()
        closers.append(db.close)
        semantics = None
        if settings.embedding_model != "none":  # loaded as the service loads it
            semantics = await asyncio.to_thread(semantics_from_settings, settings, True)
            closers.append(semantics.close)
        recall_log = floor_sql.recall_log(settings, db)
        if recall_log is not None:
            closers.insert(0, recall_log.close)  # before the pool closes
        memory_service_pb2_grpc.add_MemoryServiceServicer_to_server(
            (CannedMemoryFloor if args.mode == "canned" else MemoryFloor)(
                db, not args.no_log_recalls, semantics, recall_log
            ),
            server,
        )
        lesson_service_pb2_grpc.add_LessonServiceServicer_to_server(
            (CannedLessonFloor if args.mode == "canned" else LessonFloor)(db), server
        )
    else:
        redis = redis_client(args.redis_url, settings.redis_timeout_seconds)
        closers.append(redis.aclose)
        lesson_service_pb2_grpc.add_LessonServiceServicer_to_server(RedisLessonFloor(redis), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    settle_garbage_collector()  # as `memory-service serve` does
    print(f"floor ({args.mode}) listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)
    for close in closers:
        await close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("sql", "redis", "canned"), default="sql")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", help="the service role's URL (--mode sql)")
    parser.add_argument("--redis-url", help="--mode redis")
    parser.add_argument("--no-log-recalls", action="store_true", help="recall SQL without logging")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode in ("sql", "canned") and not args.database_url:
        parser.error(f"--mode {args.mode} needs --database-url")
    if args.mode == "redis" and not args.redis_url:
        parser.error("--mode redis needs --redis-url")
    children = []
    if args.workers > 1:
        argv = [a for a in sys.argv[1:] if not a.startswith("--workers")]
        if "--workers" in sys.argv:  # "--workers N" as two words
            i = sys.argv.index("--workers")
            argv = sys.argv[1:i] + sys.argv[i + 2 :]
        children = [
            subprocess.Popen([sys.executable, __file__, *argv, "--reuse-port"])
            for _ in range(args.workers - 1)
        ]
    try:
        import uvloop

        uvloop.run(serve(args))
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(10)


if __name__ == "__main__":
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    main()
