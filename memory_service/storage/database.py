"""The connection pools, and the one place that turns driver failures into domain errors.

Two pools, one per database role (migration 0009): faraday_app for
transactions scoped to one user, faraday_platform for those acting for all
users. Row-level security honours the acting user '*' for faraday_platform
only, so a user-scoped request never holds a connection that could see
other users' rows, whatever SQL it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from memory_service.config import redact_url
from memory_service.domain import audit
from memory_service.domain.errors import Contention, DeadlineExceeded, Unavailable
from memory_service.storage import session
from memory_service.storage.audit import write_in_transaction
from memory_service.storage.replica import ReplicaMonitor
from memory_service.telemetry import metrics

logger = logging.getLogger(__name__)

# SQLSTATE classes that mean "the server is not there right now": connection
# exceptions (08), insufficient resources (53), operator intervention such as
# a shutdown (57).
_UNAVAILABLE_CLASSES = ("08", "53", "57")


@dataclass(frozen=True)
class PoolSettings:
    """Where and how many: `size` connections in all, `user_size` of them faraday_app's.

    Service-token calls and the sweeps (faraday_platform) are most of the
    traffic, so the platform pool gets the rest of `size` and grows by up to
    `max_overflow` under load; the user pool stays at `user_size`. The total
    is what one pool of `size` (+ `max_overflow`) used to open.
    """

    url: str  # as faraday_app
    platform_url: str  # as faraday_platform
    size: int = 20
    user_size: int = 5
    max_overflow: int = 10
    timeout_seconds: float = 30.0
    recycle_seconds: float = 1800.0
    pre_ping: bool = True
    connect_timeout_seconds: float = 10.0
    statement_timeout_seconds: float = 30.0
    # "pgbouncer": the URLs point at a PgBouncer in transaction mode
    # (docs/pooling.md); "none": at PostgreSQL itself.
    pooler: str = "none"

    @property
    def transaction_pooled(self) -> bool:
        return self.pooler == "pgbouncer"

    def __post_init__(self) -> None:
        if not 0 < self.user_size < self.size:
            raise ValueError(
                f"user pool size {self.user_size} must be at least 1 and below"
                f" the pool size {self.size} (the platform pool gets the rest)"
            )


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.QueryCanceledError):
        return False  # 57014: our own statement timeout, not an outage
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state[:2] in _UNAVAILABLE_CLASSES
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.exceptions.ConnectionDoesNotExistError,
    )


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset query (RESET ALL, UNLISTEN *, ...) on release.

    That query costs a round trip per RPC. This service keeps no session
    state: every setting it makes is transaction-local (set_config(..., true)
    in connection()), it never LISTENs, holds session advisory locks or
    leaves cursors open past a transaction, and asyncpg still rolls back an
    open transaction before calling this. tests/storage/test_database.py
    proves one request's acting user never reaches the next (PITFALLS: a
    no-op reset once leaked a session-level SET of a user id).
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects.
    await conn.set_type_codec(
        "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog", format="text"
    )


# The longest statement each connection keeps prepared (asyncpg's default: 15 KB).
MAX_CACHED_STATEMENT_BYTES = 64 * 1024
APPLICATION_NAME = "faraday-memory"
# Server settings every transaction runs with. Direct connections send them at
# login; behind PgBouncer each transaction's BEGIN sets them (transaction_settings).
# No JIT: every statement here is short, and a generic plan's inflated cost
# estimates had PostgreSQL 15 compile 527 functions (540 ms) for a recall
# that runs in 3 ms.
_SERVER_SETTINGS = {"jit": "off"}


def connect_options(
    transaction_pooled: bool, application_name: str = APPLICATION_NAME
) -> dict[str, Any]:
    """asyncpg.connect / create_pool arguments for PostgreSQL itself or PgBouncer.

    Directly: named prepared statements cached per connection, and the
    settings sent at login. Behind PgBouncer in transaction mode
    (docs/pooling.md) a client's next transaction may run on another server
    connection, where its named statements do not exist, and PgBouncer
    refuses unknown login parameters (jit): so no statement cache (asyncpg
    then uses the unnamed statement and parses it again with each Bind,
    which is safe across server connections) and only application_name,
    which PgBouncer passes on, at login.
    """
    if transaction_pooled:
        return {
            "statement_cache_size": 0,
            "server_settings": {"application_name": application_name},
        }
    return {
        # asyncpg prepares anew, every call, a statement longer than its
        # default 15 KB; query recall's is about 18 KB, and preparing it
        # (parse and plan) cost more than running it.
        "max_cacheable_statement_size": MAX_CACHED_STATEMENT_BYTES,
        "server_settings": {"application_name": application_name, **_SERVER_SETTINGS},
    }


def transaction_settings() -> str:
    """set_config calls for _SERVER_SETTINGS, transaction-local, for a pooled BEGIN batch."""
    return "".join(
        f", set_config('{name}', '{value}', true)" for name, value in _SERVER_SETTINGS.items()
    )


class Database:
    """Two asyncpg pools that hand out one transaction per use, with domain-level errors.

    `connection()` takes a connection from the platform pool when the
    request acts for ALL_USERS, else from the user pool, and opens a
    transaction that starts with the request's session state
    (storage/session.py: acting user for row-level security, statement
    timeout from the caller's deadline) in the same round trip as BEGIN, and
    commits when the block ends (rolls back on an exception). It raises domain
    Unavailable for any sign that PostgreSQL is unreachable (refused, reset,
    shut down, pool timeout), so callers get UNAVAILABLE instead of INTERNAL.
    CancelledError always passes through untouched: asyncpg cancels the
    running query on it, and the pool's reset rolls the transaction back.
    """

    def __init__(self, settings: PoolSettings, *, replica: bool = False) -> None:
        """`replica`: the pools of a read replica (storage/replica.py), which open their
        connections when first needed, so a replica that is down never stops start-up."""
        self._settings = settings
        self._user_pool: asyncpg.Pool | None = None
        self._platform_pool: asyncpg.Pool | None = None
        self._is_replica = replica
        self._pool_names = ("replica_user", "replica_platform") if replica else ("user", "platform")
        # Where reads that accept a replica may go (attach_replica), and when
        # this process last committed a transaction that may have written.
        self._replica: Database | None = None
        self._monitor: ReplicaMonitor | None = None
        self._last_write = -math.inf
        # Read-only transactions whose COMMIT and release run after their
        # rows went back to the caller (connection(read_only=True)).
        self._finishing: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        s = self._settings
        platform_size = s.size - s.user_size
        user_min, platform_min = (0, 0) if self._is_replica else (s.user_size, platform_size)
        self._user_pool = await self._create_pool(s.url, user_min, s.user_size)
        try:
            self._platform_pool = await self._create_pool(
                s.platform_url, platform_min, platform_size + s.max_overflow
            )
        except BaseException:
            await self.close()
            raise
        metrics.watch_pools(self)

    def attach_replica(self, replica: Database, monitor: ReplicaMonitor) -> None:
        """Send the reads that accept a replica (connection(replica_ok=True)) to `replica`
        while `monitor` says it is fresh enough; this Database closes it."""
        self._replica, self._monitor = replica, monitor

    def replica_fresh(self) -> bool:
        """Whether a read that accepts the replica would go there now."""
        return self._monitor is not None and self._monitor.fresh_for(self._last_write)

    def pool_sizes(self) -> Iterator[tuple[str, int, int, int]]:
        """(name, open, idle, maximum) of each open pool, for the metrics' gauges."""
        for name, pool in zip(
            self._pool_names, (self._user_pool, self._platform_pool), strict=True
        ):
            if pool is not None:
                yield name, pool.get_size(), pool.get_idle_size(), pool.get_max_size()

    async def _create_pool(self, url: str, min_size: int, max_size: int) -> asyncpg.Pool:
        """A pool with its first connections open; Unavailable (saying why) if PostgreSQL
        cannot be reached or refuses the login."""
        try:
            return await self._connect_pool(url, min_size, max_size)
        except (Exception, TimeoutError) as exc:  # not CancelledError
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise Unavailable(
                f"cannot connect to PostgreSQL at {redact_url(url)}: {reason}"
            ) from exc

    async def _connect_pool(self, url: str, min_size: int, max_size: int) -> asyncpg.Pool:
        s = self._settings
        return await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            # asyncpg closes connections idle this long; it has no max-age
            # recycling, so this is the nearest equivalent of pool_recycle.
            max_inactive_connection_lifetime=s.recycle_seconds,
            timeout=s.connect_timeout_seconds,
            command_timeout=s.statement_timeout_seconds,
            init=_init_connection,
            reset=_nothing_to_reset,
            **connect_options(s.transaction_pooled),
        )

    async def close(self) -> None:
        # Their connections are still out of the pools: let them come back.
        await asyncio.gather(*self._finishing, return_exceptions=True)
        metrics.unwatch_pools(self)
        for pool in (self._user_pool, self._platform_pool):
            if pool is not None:
                await pool.close()
        self._user_pool = self._platform_pool = None
        replica, self._replica = self._replica, None
        if replica is not None:
            await replica.close()

    async def _begin(
        self,
        pool: asyncpg.Pool,
        acting_user: str,
        read_only_snapshot: bool,
        generic_plan: bool,
        async_commit: bool = False,
        read_only: bool = False,
    ) -> asyncpg.Connection:
        """A connection of `pool` inside a fresh transaction carrying the session state.

        With pre-ping, a connection that turns out dead at BEGIN (the server
        restarted since it was last used) is dropped and the BEGIN retried
        once on a new one: nothing has run yet, so this is always safe. The
        BEGIN itself is the ping, so it costs no extra round trip.
        """
        if read_only_snapshot:
            mode = " ISOLATION LEVEL REPEATABLE READ READ ONLY"
        else:
            mode = " READ ONLY" if self._is_replica or read_only else ""
        # The values are generated here (a canonical UUID or '*', ints, hex
        # digits), never caller text, so splicing them in is safe; it lets
        # BEGIN and the settings travel in one simple-protocol round trip.
        # The actor (a token's configured name may hold any character)
        # travels as hex and is decoded by PostgreSQL (session.actor_hex).
        begin = (
            f"BEGIN{mode}; SELECT set_config('faraday.acting_user', '{acting_user}',"
            f" true), set_config('faraday.acting_profiles', '{session.profiles_value()}', true),"
            " set_config('faraday.actor',"
            f" convert_from(decode('{session.actor_hex()}', 'hex'), 'UTF8'), true),"
            f" set_config('statement_timeout',"
            f" '{session.statement_timeout_ms(self._settings.statement_timeout_seconds)}', true)"
        )
        if generic_plan:
            begin += ", set_config('plan_cache_mode', 'force_generic_plan', true)"
        if async_commit:
            begin += ", set_config('synchronous_commit', 'off', true)"
        if self._settings.transaction_pooled:
            # No login settings behind PgBouncer: they come with each transaction.
            begin += transaction_settings()
        attempts = 2 if self._settings.pre_ping else 1
        for attempt in range(attempts):
            waited = metrics.enabled() and pool.get_idle_size() == 0
            started = time.perf_counter()
            conn: asyncpg.Connection = await pool.acquire(timeout=self._settings.timeout_seconds)
            metrics.pool_acquired(
                self._pool_names[1] if pool is self._platform_pool else self._pool_names[0],
                time.perf_counter() - started,
                waited,
            )
            try:
                await conn.execute(begin)
                return conn
            except asyncio.CancelledError:
                await _release(pool, conn)
                raise
            except Exception as exc:
                await _release(pool, conn)
                if attempt + 1 == attempts or not is_unavailable(exc):
                    raise
                logger.info("pre-ping: dropping a dead pooled connection (%s)", exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pool_and_begin(
        self,
        acting_user: str,
        read_only_snapshot: bool,
        generic_plan: bool,
        async_commit: bool = False,
        read_only: bool = False,
    ) -> tuple[asyncpg.Pool, asyncpg.Connection]:
        pool = self._platform_pool if acting_user == session.ALL_USERS else self._user_pool
        if pool is None:
            raise Unavailable("database pool is not open")
        try:
            return pool, await self._begin(
                pool, acting_user, read_only_snapshot, generic_plan, async_commit, read_only
            )
        except Exception as exc:  # CancelledError is a BaseException: not caught
            _raise_if_unavailable(exc)
            raise

    async def _replica_begin(
        self, acting_user: str, read_only_snapshot: bool, generic_plan: bool
    ) -> tuple[asyncpg.Pool, asyncpg.Connection] | None:
        """A transaction on the replica if it is fresh enough (storage/replica.py), else None."""
        replica, monitor = self._replica, self._monitor
        if replica is None or monitor is None or not monitor.fresh_for(self._last_write):
            return None
        try:
            return await replica._pool_and_begin(acting_user, read_only_snapshot, generic_plan)
        except Exception as exc:  # not CancelledError
            # Nothing has run yet: the primary can answer this read instead,
            # whatever stopped the replica (down, or a login it refuses).
            monitor.mark_behind(f"cannot begin a read on the replica ({exc.__cause__ or exc})")
            return None

    @asynccontextmanager
    async def connection(
        self,
        *,
        read_only_snapshot: bool = False,
        audited: bool = True,
        generic_plan: bool = False,
        replica_ok: bool = False,
        async_commit: bool = False,
        read_only: bool = False,
    ) -> AsyncIterator[asyncpg.Connection]:
        """One transaction; in an audited call, a change commits with its audit row.

        `audited=False` is for the audit log's own writes. `generic_plan`: the
        transaction's prepared statements run their cached generic plan from
        the first execution on (plan_cache_mode = force_generic_plan), for a
        statement whose planning costs more than running it and whose plan
        does not depend on its parameters (recall: storage/memories.py).
        `replica_ok`: a read only transaction that may run on the read replica
        while it is fresh enough (storage/replica.py, docs/scaling.md); it
        runs on the primary when there is none, or it lags, or is down.
        `async_commit`: COMMIT returns once the commit record is in
        PostgreSQL's WAL buffers, before it is flushed to disk
        (synchronous_commit = off, this transaction only), for bookkeeping a
        crash of PostgreSQL itself may lose (recall's interaction rows and
        last-access bumps: docs/schema.md). Ignored when the transaction
        carries an audit row: the audit log is always durable.
        `read_only` (implied by `replica_ok`): the block only reads. Its
        transaction is READ ONLY (PostgreSQL refuses any write), and the
        block returns without waiting for COMMIT: the COMMIT and the
        connection's release run in the background (docs/scaling.md, "Reads
        end off the caller's path"). A read-only transaction's COMMIT changes
        nothing, so its outcome cannot change what the block read; close()
        waits for the ones still running.
        """
        # Read once: the pool and the setting spliced into BEGIN must agree.
        acting_user = session.setting_value()
        read_only = read_only or replica_ok
        # A read's audit row is written by AuditLog.record, in a transaction
        # of its own (write_in_transaction only adds one to a change).
        event = audit.current.get() if audited and not (read_only or read_only_snapshot) else None
        if event is not None and event.written:
            event = None  # an earlier transaction of this call carried the row
        begun = (
            await self._replica_begin(acting_user, read_only_snapshot, generic_plan)
            if replica_ok
            else None
        )
        if begun is None:
            begun = await self._pool_and_begin(
                acting_user,
                read_only_snapshot,
                generic_plan,
                async_commit and event is None,
                read_only,
            )
        pool, conn = begun
        finishing = False
        try:
            yield conn
            if event is not None:
                await write_in_transaction(conn, event)
            if read_only:
                self._commit_later(pool, conn)
                finishing = True
            else:
                await conn.execute("COMMIT")
        except BaseException as exc:
            if event is not None:
                event.written = False  # rolled back with the change
            await _roll_back(conn)
            if isinstance(exc, asyncpg.QueryCanceledError):
                raise DeadlineExceeded("the statement ran out of time and was cancelled") from exc
            if isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError):
                raise Contention("a concurrent update got in the way; retry the call") from exc
            if isinstance(exc, Exception):
                _raise_if_unavailable(exc)
            raise
        finally:
            if not finishing:
                await _release(pool, conn)
            if not (read_only or read_only_snapshot):
                # It may have written (a failed COMMIT may have committed too):
                # replica reads wait until the replica has replayed it.
                self._last_write = time.monotonic()

    def _commit_later(self, pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
        task = asyncio.get_running_loop().create_task(_commit_and_release(pool, conn))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    async def fetch(
        self,
        sql: str,
        *args: Any,
        generic_plan: bool = False,
        replica_ok: bool = False,
        async_commit: bool = False,
        read_only: bool = False,
    ) -> list[asyncpg.Record]:
        async with self.connection(
            generic_plan=generic_plan,
            replica_ok=replica_ok,
            async_commit=async_commit,
            read_only=read_only,
        ) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(
        self, sql: str, *args: Any, replica_ok: bool = False, read_only: bool = False
    ) -> asyncpg.Record | None:
        async with self.connection(replica_ok=replica_ok, read_only=read_only) as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def ping(self) -> bool:
        try:
            async with self.connection() as conn:
                await conn.execute("SELECT 1")
            return True
        except Unavailable:
            return False


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """Give a connection back to its pool; a dead one is dropped, never raised.

    Raising here would replace the block's real outcome: a COMMIT that
    succeeded would be reported as an error, or Unavailable as INTERNAL.
    """
    try:
        await pool.release(conn)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        logger.info("pool: dropped a broken connection on release (%s)", exc)


async def _commit_and_release(pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:
    """End a read-only transaction whose rows are already with the caller.

    Nothing it read depends on the COMMIT, so a failure is only logged and
    the connection closed, never reused in an unknown state.
    """
    try:
        await conn.execute("COMMIT")
    except Exception as exc:
        logger.info("a read's COMMIT failed after its rows were returned (%s)", exc)
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()
    finally:
        await _release(pool, conn)


async def _roll_back(conn: asyncpg.Connection) -> None:
    """End a failed transaction before the connection goes back to the pool.

    Also after a cancellation (the caller's deadline passed): asyncpg has
    cancelled the running query, and one more statement on this task is
    fine. A connection that cannot even roll back is closed, never reused.
    """
    try:
        if conn.is_closed() or not conn.is_in_transaction():
            return
        await conn.execute("ROLLBACK")
    except Exception:
        # A connection PostgreSQL dropped mid-statement is already back in
        # the pool (asyncpg did that), and then even terminate() refuses.
        with contextlib.suppress(asyncpg.InterfaceError):
            conn.terminate()


def _raise_if_unavailable(exc: Exception) -> None:
    if is_unavailable(exc):
        logger.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        raise Unavailable("the database is unavailable; retry later") from exc
