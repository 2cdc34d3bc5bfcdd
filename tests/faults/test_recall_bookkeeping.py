"""What a crash may lose of recall's bookkeeping, and what it never loses.

A logged recall queues its interaction rows and last-access bumps; the
service writes the queue every FARADAY_RECALL_LOG_INTERVAL_SECONDS in one
transaction with synchronous_commit = off (storage/recall_log.py); with
the interval 0 each recall writes its own, in its own transaction, also
without waiting for the flush. Stores and feedback are always durable. The
loss windows (docs/schema.md, "Recall bookkeeping"):

- SIGKILL of the service loses the queued rows: recalls acknowledged in
  the last interval (plus the write in flight). With the interval 0 it
  loses nothing acknowledged: PostgreSQL had the commit before the answer.
- SIGTERM loses nothing: the graceful stop writes the queue before exiting.
- A crash of PostgreSQL itself (here `pg_ctl stop -m immediate`) may lose
  the rows committed in its last 3 x wal_writer_delay, and what was still
  queued; never an acknowledged store or feedback.
- A recall's rows are written in one transaction: all of them or none.

Recalls, stores and feedback run concurrently; each recall's query text is
unique and logged with its rows, so its rows can be counted afterwards.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)

from memory_service.server import start
from memory_service.storage import migrate
from tests.faults.conftest import (
    FAULT_SETTINGS,
    Call,
    PrivatePostgres,
    ServerProcess,
    Urls,
    new_call,
    present_ids,
    query,
    store,
)
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

CALL_TIMEOUT = 3.0
RECALLERS = 4
RECALL_LIMIT = 3
SEEDED = 6  # memories every recall can return
# Scheduling slack on top of PostgreSQL's 3 x wal_writer_delay: on a loaded
# machine the WAL writer, and the signal that ends the server, can run late.
MARGIN_SECONDS = 1.0
RUN_BEFORE_CRASH_SECONDS = 5.0


@dataclass
class Recall:
    query: str
    ended: float = 0.0
    returned: int = -1  # memories in the acknowledged response; -1: not acknowledged


@dataclass
class FeedbackCall:
    ended: float = 0.0
    interaction_id: int = 0  # 0: not acknowledged


class Workload:
    """Concurrent recalls, stores and feedback against one user, recorded; each
    loop stops at its first failure (the fault) or when told to."""

    def __init__(self, stub: memory_service_pb2_grpc.MemoryServiceStub, user: str) -> None:
        self.stub = stub
        self.user = user
        self.memory_ids: list[int] = []
        self.recalls: list[Recall] = []
        self.stores: list[Call] = []
        self.feedback: list[FeedbackCall] = []
        self.done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def seed(self) -> None:
        for n in range(SEEDED):
            memory = await self.stub.StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory_pb2.Memory(
                        user_id=self.user, content=f"tea with milk, cup {n}", category="fact"
                    )
                ),
                timeout=CALL_TIMEOUT,
            )
            self.memory_ids.append(memory.id)

    def start(self) -> None:
        loops = [self._recaller() for _ in range(RECALLERS)] + [self._storer(), self._rater()]
        self._tasks = [asyncio.create_task(loop) for loop in loops]

    async def stop(self) -> None:
        self.done.set()
        await asyncio.gather(*self._tasks)

    async def _recaller(self) -> None:
        while not self.done.is_set():
            recall = Recall(f"tea recall-{uuid.uuid4().hex}")
            self.recalls.append(recall)
            try:
                response = await self.stub.RecallMemories(
                    memory_service_pb2.RecallMemoriesRequest(
                        user_id=self.user, query=recall.query, limit=RECALL_LIMIT
                    ),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError:
                return
            recall.ended = time.monotonic()
            recall.returned = len(response.memories)

    async def _storer(self) -> None:
        while not self.done.is_set():
            call = new_call("recall-bookkeeping")
            self.stores.append(call)
            if not (await store(self.stub, self.user, call, CALL_TIMEOUT)).ok:
                return

    async def _rater(self) -> None:
        rng = random.Random(7)
        while not self.done.is_set():
            call = FeedbackCall()
            self.feedback.append(call)
            try:
                response = await self.stub.RecordFeedback(
                    memory_service_pb2.RecordFeedbackRequest(
                        memory_id=rng.choice(self.memory_ids), helpful=rng.random() < 0.5
                    ),
                    timeout=CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError:
                return
            call.ended = time.monotonic()
            call.interaction_id = response.interaction.id


@dataclass
class Outcome:
    recalls_acknowledged: list[Recall]
    recalls_missing: list[Recall]  # acknowledged, no row left
    recalls_partial: list[Recall]  # acknowledged, some rows but not all: must never happen
    stores_acknowledged: int
    stores_lost: int
    feedback_acknowledged: int
    feedback_lost: int


async def logged_rows(owner_url: str, queries: Iterable[str]) -> dict[str, int]:
    rows = await query(
        owner_url,
        "SELECT context->>'query' AS q, count(*) AS n FROM memory_interactions"
        " WHERE interaction_type = 'recall' AND context->>'query' = ANY($1) GROUP BY 1",
        list(queries),
    )
    return {row["q"]: row["n"] for row in rows}


async def check(owner_url: str, work: Workload) -> Outcome:
    recalls = [r for r in work.recalls if r.returned >= 0]
    logged = await logged_rows(owner_url, (r.query for r in recalls))
    stores = [c for c in work.stores if c.ok]
    present_stores = await present_ids(owner_url, (c.memory_id for c in stores))
    rated = [f.interaction_id for f in work.feedback if f.interaction_id]
    rows = await query(
        owner_url,
        "SELECT id FROM memory_interactions WHERE interaction_type = 'feedback' AND id = ANY($1)",
        rated,
    )
    return Outcome(
        recalls_acknowledged=recalls,
        recalls_missing=[r for r in recalls if r.returned and logged.get(r.query, 0) == 0],
        recalls_partial=[r for r in recalls if 0 < logged.get(r.query, 0) != r.returned],
        stores_acknowledged=len(stores),
        stores_lost=len(stores) - len(present_stores),
        feedback_acknowledged=len(rated),
        feedback_lost=len(rated) - len(rows),
    )


def summary(tag: str, outcome: Outcome) -> str:
    return (
        f"[{tag}] recalls acknowledged={len(outcome.recalls_acknowledged)}"
        f" missing={len(outcome.recalls_missing)} partial={len(outcome.recalls_partial)};"
        f" stores acknowledged={outcome.stores_acknowledged} lost={outcome.stores_lost};"
        f" feedback acknowledged={outcome.feedback_acknowledged} lost={outcome.feedback_lost}"
    )


async def run_then_signal(
    server: ServerProcess, interval: float, signum: signal.Signals, after: float
) -> tuple[Workload, float, int]:
    """Run the workload against a server writing recall bookkeeping every
    `interval` seconds (0: in each recall's transaction), then send `signum`:
    (the workload, when it was sent, the server's exit code)."""
    server.extra_args = (*server.extra_args, "--recall-log-interval-seconds", str(interval))
    target = await server.start()
    async with grpc.aio.insecure_channel(target) as channel:
        user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
        work = Workload(memory_service_pb2_grpc.MemoryServiceStub(channel), user)
        await work.seed()
        work.start()
        try:
            await asyncio.sleep(after)
            signalled = time.monotonic()
            server.signal(signum)
            code = await server.wait(15.0)
        finally:
            await work.stop()
    return work, signalled, code


@pytest.mark.slow
@pytest.mark.parametrize("interval", [0.0, 0.05], ids=["in-transaction", "batched"])
async def test_sigkill_of_the_service_loses_only_the_queued_recall_bookkeeping(
    migrated_database: Urls, server_process: ServerProcess, interval: float
) -> None:
    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).uniform(2.0, 3.0)
    work, killed, code = await run_then_signal(server_process, interval, signal.SIGKILL, kill_after)
    assert code == -signal.SIGKILL
    outcome = await check(migrated_database.owner, work)
    # Batched: what was queued, the recalls of the last interval and the
    # write in flight, plus scheduling slack on a loaded machine.
    since = killed - interval - MARGIN_SECONDS
    in_window = [r for r in outcome.recalls_acknowledged if r.ended >= since]
    earliest = min((r.ended - killed for r in outcome.recalls_missing), default=None)
    first_missing = "-" if earliest is None else f"{earliest:+.3f}s"
    print(
        f"\n[recall sigkill] seed={seed} interval={interval}s killed {kill_after:.2f}s in;"
        f" recalls acknowledged in the window={len(in_window)}; earliest missing one"
        f" acknowledged at {first_missing} from the kill\n" + summary("sigkill", outcome)
    )
    assert outcome.recalls_acknowledged and outcome.stores_acknowledged
    assert outcome.feedback_acknowledged
    assert all(r.returned == RECALL_LIMIT for r in outcome.recalls_acknowledged)
    assert outcome.recalls_partial == []  # a recall's rows are written whole or not at all
    if interval == 0:
        # Committed before the answer: the service's crash loses none of it.
        assert outcome.recalls_missing == []
    else:
        early = [r for r in outcome.recalls_missing if r.ended < since]
        assert early == [], f"{len(early)} recalls lost from before the queue's window"
        assert len(outcome.recalls_missing) <= len(in_window)
    assert outcome.stores_lost == 0
    assert outcome.feedback_lost == 0


@pytest.mark.slow
async def test_sigterm_writes_every_queued_recall_before_the_service_exits(
    migrated_database: Urls, server_process: ServerProcess
) -> None:
    # An interval longer than the run: every acknowledged recall is still
    # queued when the signal comes, and only the graceful stop can write it.
    work, _, code = await run_then_signal(server_process, 10.0, signal.SIGTERM, 1.5)
    assert code == 0, server_process.output()
    outcome = await check(migrated_database.owner, work)
    print("\n" + summary("sigterm", outcome))
    assert len(outcome.recalls_acknowledged) >= 10
    assert outcome.recalls_missing == [] and outcome.recalls_partial == []
    assert outcome.stores_lost == 0 and outcome.feedback_lost == 0


@pytest.mark.slow
async def test_a_postgres_crash_loses_recall_bookkeeping_within_the_window_only(
    private_postgres: PrivatePostgres,
) -> None:
    pg = private_postgres
    settings = await query(
        pg.owner_url,
        "SELECT name, setting FROM pg_settings"
        " WHERE name IN ('wal_writer_delay', 'synchronous_commit', 'fsync')",
    )
    setting = {row["name"]: row["setting"] for row in settings}
    assert setting["synchronous_commit"] == "on" and setting["fsync"] == "on", setting
    # Committed without the flush (3 x wal_writer_delay, pg_settings has ms),
    # and what was still queued in the service when PostgreSQL went away.
    interval = FAULT_SETTINGS.recall_log_interval_seconds
    window = 3 * int(setting["wal_writer_delay"]) / 1000 + interval

    running = await start(FAULT_SETTINGS, migrate.app_role_url(pg.owner_url))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
            work = Workload(memory_service_pb2_grpc.MemoryServiceStub(channel), user)
            await work.seed()
            work.start()
            try:
                # Long enough that most acknowledged recalls precede the window.
                await asyncio.sleep(RUN_BEFORE_CRASH_SECONDS)
                crash_started = time.monotonic()
                await asyncio.to_thread(pg.stop, "immediate")
                crashed = time.monotonic()
            finally:
                await work.stop()
    finally:
        await running.stop(1.0)
    await asyncio.to_thread(pg.start)  # recovers from the WAL

    outcome = await check(pg.owner_url, work)
    since = crash_started - window - MARGIN_SECONDS
    in_window = [r for r in outcome.recalls_acknowledged if r.ended >= since]
    earliest = min((r.ended - crash_started for r in outcome.recalls_missing), default=None)
    print(
        f"\n[recall pg crash] wal_writer_delay={setting['wal_writer_delay']}ms:"
        f" window {window:.2f}s + margin {MARGIN_SECONDS:.1f}s; stop took"
        f" {crashed - crash_started:.2f}s; recalls acknowledged in the window={len(in_window)};"
        f" earliest missing one acknowledged at"
        f" {'-' if earliest is None else f'{earliest:+.3f}s'} from the stop\n"
        + summary("pg crash", outcome)
    )
    assert outcome.recalls_acknowledged and outcome.stores_acknowledged
    assert outcome.feedback_acknowledged
    assert outcome.recalls_partial == []  # one transaction: all of its rows or none
    # Only recalls acknowledged in the window before the crash may be gone.
    early = [r for r in outcome.recalls_missing if r.ended < since]
    assert early == [], f"{len(early)} recalls lost from before the window"
    assert len(outcome.recalls_missing) <= len(in_window)
    assert outcome.stores_lost == 0
    assert outcome.feedback_lost == 0
