"""Recall's bookkeeping commits asynchronously: what a crash may lose of it, and what never.

A logged recall commits its interaction rows and last-access bumps with
synchronous_commit = off (storage/memories.py); stores and feedback keep it
on. The loss window this buys (docs/schema.md, "Recall bookkeeping"):

- SIGKILL of the service loses nothing acknowledged, recall rows included:
  PostgreSQL had the commit before the service answered, and it keeps
  running and flushes its WAL.
- A crash of PostgreSQL itself (here `pg_ctl stop -m immediate`) may lose
  the recalls whose commits were still in its WAL buffers: those committed
  in the last 3 x wal_writer_delay before it, never an acknowledged store
  or feedback. A recall is one transaction, so its rows go whole or not at
  all.

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


@pytest.mark.slow
async def test_sigkill_of_the_service_loses_no_acknowledged_recall_store_or_feedback(
    migrated_database: Urls, server_process: ServerProcess
) -> None:
    urls, server = migrated_database, server_process
    seed = random.randrange(1 << 30)
    kill_after = random.Random(seed).uniform(0.8, 2.0)
    target = await server.start()
    async with grpc.aio.insecure_channel(target) as channel:
        user = await register_user(admin_service_pb2_grpc.AdminServiceStub(channel))
        work = Workload(memory_service_pb2_grpc.MemoryServiceStub(channel), user)
        await work.seed()
        work.start()
        try:
            await asyncio.sleep(kill_after)
            server.signal(signal.SIGKILL)
            assert await server.wait(10.0) == -signal.SIGKILL
        finally:
            await work.stop()

    outcome = await check(urls.owner, work)
    print(
        f"\n[recall sigkill] seed={seed} killed {kill_after:.2f}s in\n"
        + summary("sigkill", outcome)
    )
    assert outcome.recalls_acknowledged and outcome.stores_acknowledged
    assert outcome.feedback_acknowledged
    assert all(r.returned == RECALL_LIMIT for r in outcome.recalls_acknowledged)
    assert outcome.recalls_partial == []
    assert outcome.recalls_missing == []  # the service's crash loses nothing acknowledged
    assert outcome.stores_lost == 0
    assert outcome.feedback_lost == 0


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
    window = 3 * int(setting["wal_writer_delay"]) / 1000  # pg_settings: in ms

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
