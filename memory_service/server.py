"""Wiring and life cycle of the grpc.aio server: health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
from dataclasses import dataclass, field, replace
from datetime import timedelta

import grpc
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_service_pb2,
    memory_service_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # the public alias health.aio is untyped

from memory_service import encryption_keys, health, listen_check, sweeper, tls
from memory_service.auth import Authenticator
from memory_service.config import Settings, redact_url
from memory_service.domain import ranking
from memory_service.domain.denial_budget import DenialBudget
from memory_service.domain.errors import Unavailable
from memory_service.rpc import decoding
from memory_service.rpc.admin_servicer import AdminServicer
from memory_service.rpc.auth_interceptor import AuthInterceptor
from memory_service.rpc.lesson_servicer import LessonServicer
from memory_service.rpc.memory_servicer import MemoryServicer
from memory_service.rpc.observing import ObservingInterceptor
from memory_service.rpc.reflection import enable_reflection
from memory_service.services import backfill
from memory_service.services.admin import Admin
from memory_service.services.imports import Importer
from memory_service.services.lessons import Lessons
from memory_service.services.memories import Memories, MemoryPolicy
from memory_service.services.partitions import PartitionJob, Retention
from memory_service.services.semantics import semantics_from_settings
from memory_service.storage import encryption
from memory_service.storage.audit import AuditLog
from memory_service.storage.cache import LessonCache
from memory_service.storage.database import Database, PoolSettings
from memory_service.storage.embeddings import EmbeddingStore
from memory_service.storage.encryption import FieldCipher
from memory_service.storage.imports import ImportStore
from memory_service.storage.lessons import TERM_JOB, LessonStore
from memory_service.storage.memories import MemoryStore
from memory_service.storage.partitions import PartitionStore
from memory_service.storage.probe import DatabaseProbe
from memory_service.storage.rate_limit import RateLimiter
from memory_service.storage.recall_log import RecallLog
from memory_service.storage.registry import RegistryStore
from memory_service.storage.replica import ReplicaMonitor
from memory_service.storage.user_data import UserDataStore
from memory_service.telemetry import metrics, tracing

logger = logging.getLogger(__name__)

# The health-check name that says whether recall can rank by embeddings.
SEMANTIC_RECALL_HEALTH = "faraday.memory.v1.SemanticRecall"

SERVICE_NAMES = (
    memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
    lesson_service_pb2.DESCRIPTOR.services_by_name["LessonService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
)
# The health names that follow PostgreSQL: overall ("") and each service's.
READINESS_NAMES = ("", *SERVICE_NAMES)


@dataclass
class RunningServer:
    """A started server and what it owns; `stop()` releases all of it."""

    server: grpc.aio.Server
    port: int
    database: Database
    cache: LessonCache | None
    health: HealthServicer
    memories: Memories
    limiter: RateLimiter
    interceptor: AuthInterceptor
    metrics: metrics.MetricsEndpoint | None = None
    tracing: tracing.Tracing | None = None
    recall_log: RecallLog | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace_seconds: float) -> None:
        # Tell load balancers first, then let in-flight calls finish.
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_seconds)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Unavailable):  # kept in the log line record_refusals wrote
            await self.interceptor.record_refusals()
        if self.recall_log is not None:  # every call has ended: write what they queued
            await self.recall_log.close()
        if self.cache is not None:
            await self.cache.close()
        await self.limiter.close()
        await self.memories.semantics.close()
        await self.database.close()
        if self.tracing is not None:  # after the pools: their last statements are spans too
            await asyncio.to_thread(self.tracing.shutdown)  # flushes: a network call
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)


async def tool_database(settings: Settings, app_url: str, platform_url: str) -> Database:
    """An open Database for a command's maintenance work (embed, partitions,
    rotate-keys), as the service roles.

    One statement at a time needs one connection (the platform pool's); the
    user pool's is never used but cannot be empty.
    """
    db = Database(
        PoolSettings(
            url=app_url,
            platform_url=platform_url,
            size=2,
            user_size=1,
            max_overflow=0,
            connect_timeout_seconds=settings.connect_timeout_seconds,
            statement_timeout_seconds=settings.statement_timeout_seconds,
            pooler=settings.database_pooler,
        )
    )
    await db.open()
    return db


def pool_settings(settings: Settings, url: str, platform_url: str) -> PoolSettings:
    return PoolSettings(
        url=url,
        platform_url=platform_url,
        size=settings.pool_size,
        # Service tokens carry most of the traffic, user JWTs the rest.
        user_size=settings.user_pool_size or max(1, settings.pool_size // 4),
        max_overflow=settings.pool_max_overflow,
        timeout_seconds=settings.pool_timeout_seconds,
        recycle_seconds=settings.pool_recycle_seconds,
        pre_ping=settings.pool_pre_ping,
        connect_timeout_seconds=settings.connect_timeout_seconds,
        statement_timeout_seconds=settings.statement_timeout_seconds,
        pooler=settings.database_pooler,
    )


def settle_garbage_collector() -> None:
    """Garbage collection for a serving process, once it has started (`serve` calls it).

    What start-up built (modules, descriptors, pools: ~110k objects) lives as
    long as the process: frozen, full collections stop walking it, each of
    which paused every call in flight for ~100 ms. A young generation of
    10,000 objects rather than 700 collects ~15 times less often for the
    same work. Under recall load the collector's share of the server's CPU
    fell from about 2-4% (with a full collection every ~10 s) to 0.2%, with
    none (bench/gc_share.py; bench/README.md).
    Not in start() itself: a test process starting many servers would keep
    every earlier test's cyclic garbage.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _connection_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC's connection-age limit (core adds +-10% jitter, so clients do not reconnect at once)."""
    if not settings.max_connection_age_seconds:
        return []
    age, grace = settings.max_connection_age_seconds, settings.max_connection_age_grace_seconds
    return [
        ("grpc.max_connection_age_ms", round(age * 1000)),
        ("grpc.max_connection_age_grace_ms", round(grace * 1000)),
    ]


async def _prepare_encryption(database: Database, cipher: FieldCipher | None) -> None:
    """Refuse keys that cannot read the stored rows (ValueError); seal plaintext rows."""
    await encryption.check_keys(database, cipher)
    if cipher is None:
        logger.warning(
            "encryption at rest is off: users' names, schools, departments and custom"
            " instructions are stored in plaintext (set FARADAY_ENCRYPTION_KEYS; docs/security.md)"
        )
        return
    sealed = await encryption.seal_plaintext_users(database, cipher)
    if sealed:
        logger.info("encrypted the sensitive fields of %d users stored in plaintext", sealed)


async def start(
    settings: Settings, database_url: str, platform_database_url: str | None = None
) -> RunningServer:
    """Open the pools and cache, bind, start serving. Port 0 picks a free port.

    `database_url` logs in as faraday_app; `platform_database_url` as
    faraday_platform, by default the same URL with that user and no password.
    """
    # Configuration errors surface before anything is opened.
    authenticator = Authenticator.from_settings(settings)
    # Whether the authenticator actually built lets anyone in, not whether a setting is present.
    tls.check_listen_address(settings, auth_enabled=authenticator.enabled)
    credentials = tls.server_credentials(settings)
    # Before the pools open, so asyncpg is instrumented for all of their statements.
    tracer = tracing.start()
    try:
        return await _start(
            settings, database_url, platform_database_url, authenticator, credentials, tracer
        )
    except BaseException:
        if tracer is not None:  # asyncpg is instrumented process-wide: undo it
            tracer.shutdown()
        raise


async def _start(
    settings: Settings,
    database_url: str,
    platform_database_url: str | None,
    authenticator: Authenticator,
    credentials: grpc.ServerCredentials | None,
    tracer: tracing.Tracing | None,
) -> RunningServer:
    if platform_database_url is None:
        # Imported here: migrate imports alembic, which logs at INFO on import
        # and would bury cli.py's configuration errors in noise.
        from memory_service.storage.migrate import platform_role_url

        platform_database_url = platform_role_url(database_url)
    cipher = encryption_keys.cipher(settings)  # ValueError: a configuration error
    database = Database(pool_settings(settings, database_url, platform_database_url))
    await database.open()
    try:
        monitor = await _attach_replica(database, settings, platform_database_url)
        await _prepare_encryption(database, cipher)
    except BaseException:
        await database.close()
        raise
    cache = (
        LessonCache(settings.redis_url, settings.cache_ttl_seconds, settings.redis_timeout_seconds)
        if settings.redis_url
        else None
    )
    recall_log = (
        RecallLog(
            database, settings.recall_log_interval_seconds, settings.recall_log_max_pending_rows
        )
        if settings.log_recall_interactions and settings.recall_log_interval_seconds > 0
        else None
    )
    memory_store = MemoryStore(database, recall_log=recall_log)
    memory_store.vectors = await memory_store.has_vectors()
    try:
        # Seconds for a large model: off the event loop, before serving.
        semantics = await asyncio.to_thread(semantics_from_settings, settings, memory_store.vectors)
    except Exception:
        await database.close()
        raise
    logger.debug("recall: %s", semantics.describe())
    memories = Memories(
        memory_store,
        MemoryPolicy(
            log_recall_interactions=settings.log_recall_interactions,
            feedback_learning_rate=settings.feedback_learning_rate,
            dedup_min_similarity=settings.dedup_min_similarity,
        ),
        semantics,
    )
    backfill_wake = backfill.BackfillWake()
    importer = Importer(
        ImportStore(database, vectors=memory_store.vectors, dimension=semantics.dimension),
        semantics,
        backfill_wake.wake,
        default_min_similarity=settings.dedup_min_similarity,
    )
    lesson_store = LessonStore(database, settings.search_candidates_per_word)
    lessons = Lessons(lesson_store, cache)
    admin = Admin(
        RegistryStore(database, cipher),
        lesson_store,
        cache,
        user_data=UserDataStore(database, cipher, recall_log),
    )
    default_weights = replace(
        ranking.DEFAULT_WEIGHTS, half_life=timedelta(days=settings.recall_half_life_days)
    )

    limiter = RateLimiter(
        settings.rate_limit_per_second,
        # No burst configured: one second's worth of calls.
        settings.rate_limit_burst or max(1, math.ceil(settings.rate_limit_per_second)),
        settings.redis_url,
        settings.redis_timeout_seconds,
    )
    interceptor = AuthInterceptor(
        authenticator,
        limiter,
        AuditLog(database),
        DenialBudget(settings.denied_calls_per_second, settings.denied_calls_burst),
    )
    # Tracing first (the RPC's span holds everything), then the request id,
    # metrics and access log, then auth: denied calls are observed too.
    interceptors: list[grpc.aio.ServerInterceptor] = [ObservingInterceptor(), interceptor]  # type: ignore[type-arg]
    if tracer is not None:
        interceptors.insert(0, tracer.interceptor)
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            # A second server on a busy port must fail, not share traffic,
            # unless it is one of the --workers meant to share it.
            ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
            *_connection_age_options(settings),
        ],
    )
    # Undecodable request bytes get INVALID_ARGUMENT, not grpc's UNKNOWN.
    decoding.add_servicer(
        MemoryServicer(memories, default_weights, importer),
        memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"],
        server,
    )
    decoding.add_servicer(
        LessonServicer(lessons),
        lesson_service_pb2.DESCRIPTOR.services_by_name["LessonService"],
        server,
    )
    decoding.add_servicer(
        AdminServicer(admin), admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"], server
    )
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server
    )
    address = f"{settings.host}:{settings.port}"
    try:
        if not settings.reuse_port:  # workers share the port on purpose
            listen_check.check_port_free(settings.host, settings.port)
        port = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
    except (OSError, RuntimeError) as exc:  # grpc says RuntimeError("Failed to bind ...")
        await database.close()
        if isinstance(exc, OSError):
            raise
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        await database.close()
        raise OSError(f"cannot listen on {address}")
    endpoint = None
    if settings.metrics_port is not None:
        where = f"{settings.metrics_host}:{settings.metrics_port}"
        try:
            endpoint = metrics.serve(settings.metrics_host, settings.metrics_port)
        except OSError as exc:
            await database.close()
            raise OSError(f"cannot serve metrics on {where}: {exc}") from exc
        logger.info("metrics on http://%s:%d/metrics", settings.metrics_host, endpoint.port)
    await server.start()
    for name in (*READINESS_NAMES, health.LIVENESS_HEALTH):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    # Not a gRPC service: a capability grpcurl users and load balancers can
    # ask about. NOT_SERVING: recall is lexical-only (no model or no pgvector).
    await health_servicer.set(
        SEMANTIC_RECALL_HEALTH,
        health_pb2.HealthCheckResponse.SERVING
        if semantics.enabled
        else health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    running = RunningServer(
        server, port, database, cache, health_servicer, memories, limiter, interceptor
    )
    running.tracing, running.metrics = tracer, endpoint
    if recall_log is not None:
        recall_log.start()
        running.recall_log = recall_log
    running._tasks.append(
        asyncio.create_task(
            sweeper.run_periodically(
                interceptor.record_refusals,
                settings.audit_refusals_interval_seconds,
                "audit rows for refused calls",
            ),
            name="audit-refusals",
        )
    )
    running._tasks.append(
        asyncio.create_task(
            _follow_database(health_servicer, settings, platform_database_url),
            name="health-probe",
        )
    )
    if monitor is not None:
        running._tasks.append(asyncio.create_task(monitor.run(), name="replica-monitor"))
    if settings.sweep_interval_seconds > 0:
        running._tasks.append(
            asyncio.create_task(
                sweeper.run_periodically(
                    lambda: memories.sweep_expired(settings.sweep_batch_size),
                    settings.sweep_interval_seconds,
                ),
                name="expiry-sweep",
            )
        )
    if settings.partition_interval_seconds > 0:
        running._tasks.append(
            asyncio.create_task(
                sweeper.run_periodically(
                    partition_job(database, settings).run,
                    settings.partition_interval_seconds,
                    "partition job",
                ),
                name="partition-job",
            )
        )
    if settings.lesson_terms_interval_seconds > 0:
        # Every process has the job; a run does nothing if another process's
        # started less than half an interval ago (migration 0021), so the
        # counts are read once or twice an interval, however many processes.
        async def lesson_term_job() -> int:
            changed = await lessons.count_terms(settings.lesson_terms_interval_seconds / 2)
            return changed or 0

        # After one interval: the counts are kept in the database (migration
        # 0020 made the first), so a restart need not recount them.
        running._tasks.append(
            asyncio.create_task(
                sweeper.run_periodically(
                    lesson_term_job,
                    settings.lesson_terms_interval_seconds,
                    TERM_JOB,  # its metrics' job label, and its row in job_runs
                    first_after_seconds=settings.lesson_terms_interval_seconds,
                ),
                name="lesson-term-job",
            )
        )
    if semantics.enabled and semantics.embedder is not None:
        # Imported memories come without vectors; the server embeds them
        # after the import, off the request path, when an import wakes it.
        running._tasks.append(
            asyncio.create_task(
                backfill.run_when_woken(
                    EmbeddingStore(database), semantics.embedder, backfill_wake
                ),
                name="import-backfill",
            )
        )
    logger.debug("serving on %s:%d", settings.host, port)
    return running


def partition_job(database: Database, settings: Settings) -> PartitionJob:
    """The partition job with the settings' retention and lock timeout."""
    return PartitionJob(
        PartitionStore(database, settings.partition_lock_timeout_seconds),
        Retention(settings.interaction_retention_days, settings.audit_retention_days),
    )


async def _attach_replica(
    database: Database, settings: Settings, platform_database_url: str
) -> ReplicaMonitor | None:
    """Open the read replica's pools (connecting when first used) and its lag monitor."""
    if settings.replica_database_url is None:
        return None
    from memory_service.storage.migrate import platform_role_url

    url = settings.replica_database_url
    platform_url = settings.replica_platform_database_url or platform_role_url(url)
    replica = Database(pool_settings(settings, url, platform_url), replica=True)
    await replica.open()
    monitor = ReplicaMonitor(platform_database_url, platform_url, settings.replica_max_lag_seconds)
    database.attach_replica(replica, monitor)
    logger.info(
        "read replica %s: reads that accept one go there while it lags by at most %gs",
        redact_url(url),
        settings.replica_max_lag_seconds,
    )
    return monitor


async def _follow_database(
    health_servicer: HealthServicer, settings: Settings, database_url: str
) -> None:
    """Readiness follows PostgreSQL (memory_service/health.py); liveness stays SERVING."""
    # A probe may take as long as the interval, so probes never pile up.
    probe = DatabaseProbe(
        database_url,
        settings.health_probe_interval_seconds,
        transaction_pooled=settings.database_pooler == "pgbouncer",
    )

    async def set_serving(serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in READINESS_NAMES:  # ignored once a graceful stop has begun
            await health_servicer.set(name, status)

    try:
        await health.follow_database(
            probe.check, set_serving, settings.health_probe_interval_seconds
        )
    finally:
        await probe.close()
