"""Recall's bookkeeping written in batches, off the request path.

A logged recall returns one interaction row per recalled memory and bumps
those memories' last_accessed. Written inside the recall's own transaction
that costs about 2.6 ms of PostgreSQL CPU per recall at 1M memories (10
rows, each a heap insert, two index entries and two foreign-key checks,
plus 10 row updates, and a transaction: bench/README.md), where the read
itself costs about 1.2 ms. Here a recall only queues its rows; one task
writes everything queued every `interval_seconds` in one transaction of two
statements, so the per-statement and per-transaction work is shared by
every recall of the interval (bench/recall_commit.py measures the options).

The loss window (docs/schema.md, "Recall bookkeeping"): a crash of this
process (SIGKILL, OOM kill) loses the rows still queued, those of the
recalls acknowledged in the last `interval_seconds` plus the time one
write takes; a graceful stop (SIGTERM) writes them first. The write itself
commits with synchronous_commit = off: a crash of PostgreSQL loses at most
the last 3 x wal_writer_delay of them. A recall's rows are always written
in one transaction: all of them or none.

What is written is only ever what a recall returned: memory ids read
under the caller's row-level security a moment earlier, never caller
input. The write runs as ALL_USERS (the faraday_platform role) because one
batch holds many users' rows. A memory deleted since (DeleteMemory,
DeleteUserData, the expiry sweep) gets no row and no bump: the statements
join the queued ids with user_memories, and a deletion that commits
between that join and the foreign-key check fails the write, which is
retried and then finds the memory gone, so nothing an erasure removed
comes back.

Bounded: at most `max_pending_rows` rows wait; a recall that would queue
more waits for the next write (back-pressure, never a silent drop). A write
that fails is retried with the next one; rows are dropped (counted in
faraday_recall_log_rows{outcome="dropped"} and logged) only after
`ATTEMPTS` failures of the same batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import uuid
from dataclasses import dataclass, field

import asyncpg

from memory_service.domain.errors import Unavailable
from memory_service.storage import session
from memory_service.storage.database import Database
from memory_service.telemetry import metrics

logger = logging.getLogger(__name__)

ATTEMPTS = 3
# Rows in one write at most: a large queue (a stall, then a burst) is
# written in several transactions of this size, none of them long.
BATCH_ROWS = 5000
# Longest wait between writes while PostgreSQL is unavailable.
RETRY_SECONDS_MAX = 1.0

# The last-access bump takes only the row locks it can get at once, in key
# order: a memory being updated or deleted right now keeps the time it has
# (it is being written anyway), and no write here ever waits for a
# request's transaction. NO KEY UPDATE, as the UPDATE itself takes: it does
# not conflict with the KEY SHARE locks of the interaction inserts' foreign
# keys.
_BUMP = """
WITH queued AS (
    SELECT DISTINCT user_id, memory_id
    FROM unnest($1::uuid[], $2::bigint[]) AS q(user_id, memory_id)
), free AS MATERIALIZED (
    SELECT m.user_id, m.id FROM queued JOIN user_memories m
        ON m.user_id = queued.user_id AND m.id = queued.memory_id
    ORDER BY m.user_id, m.id FOR NO KEY UPDATE OF m SKIP LOCKED
)
UPDATE user_memories m SET last_accessed = now()
FROM free WHERE m.user_id = free.user_id AND m.id = free.id
"""

# One row per recalled memory that still exists, in the order recalled:
# interaction ids grow with the recalls' order, and with the rank within one.
_LOG = """
INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
SELECT m.id, m.user_id, 'recall',
       jsonb_build_object('rank', q.rank, 'score', q.score, 'query', q.query)
FROM unnest($1::uuid[], $2::bigint[], $3::int[], $4::float8[], $5::text[])
         WITH ORDINALITY AS q(user_id, memory_id, rank, score, query, n)
    JOIN user_memories m ON m.user_id = q.user_id AND m.id = q.memory_id
ORDER BY q.n
"""


@dataclass
class _Batch:
    user_ids: list[uuid.UUID] = field(default_factory=list)
    memory_ids: list[int] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    queries: list[str | None] = field(default_factory=list)
    bump: list[bool] = field(default_factory=list)
    failures: int = 0

    def __len__(self) -> int:
        return len(self.memory_ids)

    def split(self, rows: int) -> tuple[_Batch, _Batch]:
        """The first recalls, `rows` rows or a little more, and the rest: a
        recall's rows always go in one write (its first row has rank 1)."""
        while rows < len(self.ranks) and self.ranks[rows] != 1:
            rows += 1
        head = _Batch(
            self.user_ids[:rows],
            self.memory_ids[:rows],
            self.ranks[:rows],
            self.scores[:rows],
            self.queries[:rows],
            self.bump[:rows],
            self.failures,
        )
        tail = _Batch(
            self.user_ids[rows:],
            self.memory_ids[rows:],
            self.ranks[rows:],
            self.scores[rows:],
            self.queries[rows:],
            self.bump[rows:],
        )
        return head, tail


class RecallLog:
    """Queues recalls' interaction rows and last-access bumps; writes them in batches.

    `start()` begins the writing task; `close()` stops it after writing
    everything queued. `flush()` writes what is queued now (ListInteractions,
    ExportUserData and DeleteUserData call it first, so in one process a
    recall's rows are always visible to them).
    """

    def __init__(self, db: Database, interval_seconds: float, max_pending_rows: int) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        if max_pending_rows < 100:
            raise ValueError("max_pending_rows must hold at least one recall of 100 rows")
        self._db = db
        self._interval = interval_seconds
        self._max_pending = max_pending_rows
        self._pending = _Batch()
        self._queued = asyncio.Event()  # something is pending
        self._space = asyncio.Condition()  # pending rows went down
        self._write_lock = asyncio.Lock()  # one write at a time, in queue order
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="recall-log")

    @property
    def pending_rows(self) -> int:
        return len(self._pending)

    async def add(
        self, user_id: uuid.UUID, recalled: list[tuple[int, float, bool]], query: str | None
    ) -> None:
        """Queue one recall's rows: (memory id, score, whether to bump its
        last access) in rank order. A profile-limited caller's recall bumps
        only the memories it may change, as row-level security has it for a
        recall writing its own (docs/security.md): never a shared one."""
        if not recalled:
            return
        if self._closed:
            raise RuntimeError("the recall log is closed")
        async with self._space:
            await self._space.wait_for(
                lambda: len(self._pending) + len(recalled) <= self._max_pending
            )
        pending = self._pending
        for rank, (memory_id, score, bump) in enumerate(recalled, start=1):
            pending.user_ids.append(user_id)
            pending.memory_ids.append(memory_id)
            pending.ranks.append(rank)
            pending.scores.append(score)
            pending.queries.append(query)
            pending.bump.append(bump)
        self._queued.set()

    async def flush(self) -> None:
        """Write every row queued before this call.

        The write runs in a task of its own, with none of the caller's
        session state (it acts for ALL_USERS), and goes on if the caller is
        cancelled (its deadline passed): queued rows are never half-handled.
        """
        task = asyncio.create_task(self._write_queued(), context=contextvars.Context())
        task.add_done_callback(_retrieve)
        await asyncio.shield(task)

    async def close(self) -> None:
        """Stop the task and write what is queued; no recall may queue after this."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception:
            logger.exception(
                "recall log: %d queued rows could not be written at shutdown",
                len(self._pending),
            )
            metrics.recall_log_rows("dropped", len(self._pending))

    async def _run(self) -> None:
        backoff = self._interval
        while True:
            await self._queued.wait()
            await asyncio.sleep(backoff)  # gather the interval's recalls
            try:
                await self.flush()
                backoff = self._interval
            except Unavailable:
                # Kept queued: PostgreSQL may be restarting. Recalls fail
                # meanwhile (their read needs it too), so the queue stays
                # within its bound; tried again, less and less often.
                backoff = min(RETRY_SECONDS_MAX, backoff * 2)
                logger.warning("recall log: database unavailable; %d rows wait", len(self._pending))
            except Exception:
                logger.warning("recall log: write failed; retrying", exc_info=True)

    async def _write_queued(self) -> None:
        async with self._write_lock:
            while len(self._pending):
                await self._write_some()

    async def _write_some(self) -> None:
        batch, self._pending = self._pending.split(BATCH_ROWS)
        if not len(self._pending):
            self._queued.clear()
        try:
            await self._write(batch)
        except Unavailable:
            self._requeue(batch)
            raise
        except Exception:
            batch.failures += 1
            if batch.failures < ATTEMPTS:
                self._requeue(batch)
                raise
            logger.exception("recall log: dropping %d rows after %d failures", len(batch), ATTEMPTS)
            metrics.recall_log_rows("dropped", len(batch))
        else:
            metrics.recall_log_rows("written", len(batch))
        async with self._space:
            self._space.notify_all()

    def _requeue(self, batch: _Batch) -> None:
        rest = self._pending
        batch.user_ids += rest.user_ids
        batch.memory_ids += rest.memory_ids
        batch.ranks += rest.ranks
        batch.scores += rest.scores
        batch.queries += rest.queries
        batch.bump += rest.bump
        self._pending = batch
        self._queued.set()

    async def _write(self, batch: _Batch) -> None:
        for attempt in range(ATTEMPTS):
            try:
                with session.acting_as(session.ALL_USERS):
                    async with self._db.connection(audited=False, async_commit=True) as conn:
                        await conn.execute(
                            _BUMP,
                            list(itertools.compress(batch.user_ids, batch.bump)),
                            list(itertools.compress(batch.memory_ids, batch.bump)),
                        )
                        await conn.execute(
                            _LOG,
                            batch.user_ids,
                            batch.memory_ids,
                            batch.ranks,
                            batch.scores,
                            batch.queries,
                        )
                return
            except asyncpg.ForeignKeyViolationError:
                # A memory (or its user) was deleted between the join and the
                # foreign-key check; written again, the join leaves it out.
                if attempt + 1 == ATTEMPTS:
                    raise


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a flush's exception as seen when its caller was cancelled first."""
    if not task.cancelled():
        task.exception()
