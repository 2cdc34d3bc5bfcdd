"""Metrics, request ids and access logs of a real server, over a real channel.

One server with auth (a service token), the Redis lesson cache, /metrics on
a free port and, where the database keeps vectors, the built-in embedding
model. The metrics test scrapes /metrics over HTTP before and after real
calls and checks what moved; the log tests capture the log output in both
formats and check that neither the token nor the content of any request
reaches it, on the OK, INVALID_ARGUMENT and INTERNAL paths alike.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)
from prometheus_client.parser import text_string_to_metric_families

from memory_service.auth import token_hash
from memory_service.server import RunningServer
from memory_service.telemetry import logs
from tests.rpc.conftest import TEST_SETTINGS, shared_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "wordllama-l2-supercat-256"
STORE = "/faraday.memory.v1.MemoryService/StoreMemory"
GET_MEMORY = "/faraday.memory.v1.MemoryService/GetMemory"
ADMIN_UPSERT_USER = "/faraday.memory.v1.AdminService/UpsertUser"
# Recognizable, and nowhere in a log line unless something leaked it.
CONTENT = "Zebra-quartz-4417 prefers worked examples"
QUERY = "quartz-4417 recall query"


@dataclass
class Observed:
    server: RunningServer
    memory: memory_service_pb2_grpc.MemoryServiceStub
    lesson: lesson_service_pb2_grpc.LessonServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub
    token: str
    semantic: bool

    @property
    def auth(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.token}"),)

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        assert self.server.metrics is not None
        url = f"http://127.0.0.1:{self.server.metrics.port}/metrics"

        samples = {}
        for family in text_string_to_metric_families(await asyncio.to_thread(_fetch, url)):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples


@pytest.fixture(scope="module")
async def observed(
    app_url: str, redis_url: str, has_pgvector: bool, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Observed]:
    token = f"fmt_observed_{uuid.uuid4().hex}"
    path: Path = tmp_path_factory.mktemp("obs") / "tokens.json"
    scopes = ["memories:read", "memories:write", "lessons:read", "admin"]
    entry = {"name": "obs", "sha256": token_hash(token), "scopes": scopes}
    await asyncio.to_thread(path.write_text, json.dumps({"tokens": [entry]}))
    settings = TEST_SETTINGS.with_overrides(
        service_tokens_file=path,
        redis_url=redis_url,
        metrics_port=0,
        embedding_model=MODEL if has_pgvector else None,
    )
    async with (
        shared_server(settings, app_url) as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch,
    ):
        yield Observed(
            running,
            memory_service_pb2_grpc.MemoryServiceStub(ch),
            lesson_service_pb2_grpc.LessonServiceStub(ch),
            admin_service_pb2_grpc.AdminServiceStub(ch),
            token,
            has_pgvector,
        )


async def _user(o: Observed) -> str:
    user = await o.admin.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(email=f"t-{uuid.uuid4().hex[:8]}@school.example.org")
        ),
        metadata=o.auth,
    )
    return str(user.id)


def _store_request(user: str, **fields: Any) -> memory_service_pb2.StoreMemoryRequest:
    memory = memory_pb2.Memory(user_id=user, content=CONTENT, category="preference", **fields)
    memory.context.update({"note": CONTENT})
    return memory_service_pb2.StoreMemoryRequest(memory=memory)


def _delta(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_metrics_move_with_real_calls(observed: Observed, redis_url: str) -> None:
    o = observed
    client = aioredis.from_url(redis_url)
    try:  # lesson ids restart with every test: no entry of another test's lesson
        await client.flushdb()
    finally:
        await client.aclose()
    user = await _user(o)
    before = await o.scrape()

    for _ in range(3):
        await o.memory.StoreMemory(_store_request(user), metadata=o.auth)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await o.memory.GetMemory(memory_service_pb2.GetMemoryRequest(id=987654), metadata=o.auth)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await o.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=1),
            metadata=(("authorization", "Bearer fmt_not_a_real_token_000000"),),
        )
    assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
    lesson = await o.admin.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(lesson=lesson_pb2.Lesson(title="T", user_id=user)),
        metadata=o.auth,
    )
    for _ in range(2):  # the first fills the cache, the second is a hit
        await o.lesson.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson.id), metadata=o.auth)
    recalled = await o.memory.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query="worked examples"),
        metadata=o.auth,
    )

    after = await o.scrape()
    calls = "faraday_rpc_calls_total"
    assert _delta(before, after, calls, method=STORE, code="OK") == 3
    assert _delta(before, after, calls, method=GET_MEMORY, code="NOT_FOUND") == 1
    assert _delta(before, after, calls, method=GET_MEMORY, code="UNAUTHENTICATED") == 1
    assert _delta(before, after, "faraday_rpc_duration_seconds_count", method=STORE) == 3
    assert _delta(before, after, "faraday_lesson_cache_lookups_total", result="hit") == 1
    assert _delta(before, after, "faraday_lesson_cache_lookups_total", result="miss") == 1
    assert _delta(before, after, "faraday_recall_scored_rows_count") == 1
    assert _delta(before, after, "faraday_recall_scored_rows_sum") == len(recalled.memories)
    assert _delta(before, after, "faraday_db_pool_acquire_seconds_count", pool="platform") >= 6
    for pool in ("user", "platform"):
        assert ("faraday_db_pool_connections_idle", frozenset({("pool", pool)})) in after
    # Summed over every server this test process runs: present and sane.
    assert after[("faraday_db_pool_connections_max", frozenset({("pool", "platform")}))] >= 5
    if o.semantic:  # three memories (and the query) embedded by the server
        assert _delta(before, after, "faraday_embedded_texts_total", model=MODEL) >= 3
        assert _delta(before, after, "faraday_embedding_duration_seconds_count", model=MODEL) >= 1


async def test_request_id_is_returned_and_a_bad_one_replaced(observed: Observed) -> None:
    o = observed
    user = await _user(o)
    call = o.memory.StoreMemory(
        _store_request(user), metadata=(*o.auth, ("x-request-id", "caller-chose-7"))
    )
    await call
    assert ("x-request-id", "caller-chose-7") in tuple(await call.trailing_metadata())

    with pytest.raises(grpc.aio.AioRpcError) as error:  # an error keeps it, with its details
        await o.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=987654),
            metadata=(*o.auth, ("x-request-id", "caller-chose-8")),
        )
    trailers = dict(error.value.trailing_metadata() or ())
    assert trailers["x-request-id"] == "caller-chose-8"
    assert "grpc-status-details-bin" in trailers

    call = o.memory.GetMemory(
        memory_service_pb2.GetMemoryRequest(id=987654),
        metadata=(*o.auth, ("x-request-id", "has spaces; and {braces}")),
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    generated = dict(error.value.trailing_metadata() or ())["x-request-id"]
    assert isinstance(generated, str) and len(generated) == 32 and " " not in generated


async def test_unknown_methods_are_unimplemented_and_leave_no_metric(observed: Observed) -> None:
    """A method no servicer has gets grpc's own answer, not our interceptors',
    and a caller's made-up method names never become metric labels."""
    o = observed
    unknown = ("/faraday.memory.v1.MemoryService/NoSuchMethod", "/no.such.Service/Call")
    before = await o.scrape()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{o.server.port}") as channel:
        for method in unknown:
            call = channel.unary_unary(method)
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call(b"", metadata=o.auth, timeout=5)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    user = await _user(o)  # and the server goes on serving
    after = await o.scrape()
    assert (
        _delta(before, after, "faraday_rpc_calls_total", method=ADMIN_UPSERT_USER, code="OK") == 1
    )
    labelled = {dict(labels).get("method") for _, labels in after}
    assert not labelled & set(unknown)
    assert user


@pytest.fixture
def captured(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """Everything logged at INFO and above, in the format the test is parametrized with."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(request.param))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def _logged(captured: io.StringIO, marker: str, seconds: float = 5.0) -> str:
    """What was logged, once a line holding `marker` is among it."""
    deadline = asyncio.get_running_loop().time() + seconds
    while marker not in (text := captured.getvalue()):
        assert asyncio.get_running_loop().time() < deadline, f"no log line with {marker!r}"
        await asyncio.sleep(0.01)
    return text


@pytest.mark.parametrize("captured", ["json", "text"], indirect=True)
async def test_logs_hold_no_secret_and_no_content(
    observed: Observed, captured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    o = observed
    user = await _user(o)
    stored = await o.memory.StoreMemory(
        _store_request(user), metadata=(*o.auth, ("x-request-id", "log-test-ok"))
    )
    await o.memory.RecallMemories(
        memory_service_pb2.RecallMemoriesRequest(user_id=user, query=QUERY), metadata=o.auth
    )
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await o.memory.StoreMemory(_store_request(user, importance=7.5), metadata=o.auth)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
        await o.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.id),
            metadata=(("authorization", f"Bearer {o.token}x"),),
        )
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

    async def broken_get(*args: object, **kwargs: object) -> None:
        # A bug whose message quotes data, as PostgreSQL's errors can.
        raise RuntimeError(f"cannot read {CONTENT} with {o.token}")

    monkeypatch.setattr(o.server.memories._store, "get", broken_get)
    with pytest.raises(grpc.aio.AioRpcError) as internal:
        await o.memory.GetMemory(
            memory_service_pb2.GetMemoryRequest(id=stored.id),
            metadata=(*o.auth, ("x-request-id", "log-test-internal")),
        )
    assert internal.value.code() == grpc.StatusCode.INTERNAL

    # The access line is written on the loop's turn after the response
    # (rpc/observing.py), so it may come after the caller has its answer.
    text = await _logged(captured, "GetMemory INTERNAL")
    for secret in (o.token, CONTENT, "Zebra-quartz", QUERY, "quartz-4417"):
        assert secret not in text
    lines = text.splitlines()
    if lines[0].startswith("{"):
        entries = [json.loads(line) for line in lines]  # one object per line
        access = [e for e in entries if e["logger"] == "memory_service.access"]
        ok = next(e for e in access if e.get("request_id") == "log-test-ok")
        assert ok["method"] == STORE and ok["code"] == "OK" and ok["caller"] == "service:obs"
        assert ok["duration_ms"] > 0 and ok["peer"]
        codes = {e["code"] for e in access}
        assert {"OK", "INVALID_ARGUMENT", "UNAUTHENTICATED", "INTERNAL"} <= codes
        denied = next(e for e in access if e["code"] == "UNAUTHENTICATED")
        assert denied["caller"] == "anonymous:anonymous"
        error = next(e for e in entries if e["level"] == "ERROR")
        assert error["request_id"] == "log-test-internal"
        assert "RuntimeError" in error["exception"] and "broken_get" in error["exception"]
    else:
        assert any("[log-test-ok]" in line and f"{STORE} OK" in line for line in lines)
        assert any("[log-test-internal]" in line and "internal error" in line for line in lines)
        assert "RuntimeError" in text and "INVALID_ARGUMENT" in text


def _two_free_ports() -> int:
    """A port P such that P and P + 1 are both free (for two workers' endpoints)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise AssertionError("no two consecutive free ports")


@pytest.mark.slow
async def test_each_worker_serves_its_own_metrics_port(app_url: str) -> None:
    from tests.rpc.test_server import _answers, _free_port, _spawn_workers, _terminate

    metrics_port, port = _two_free_ports(), _free_port()
    env = {
        **os.environ,
        "FARADAY_DATABASE_URL": app_url,
        "FARADAY_LOG_LEVEL": "WARNING",
        "FARADAY_METRICS_PORT": str(metrics_port),
    }
    proc = _spawn_workers(env, port)
    try:
        deadline = time.monotonic() + 60
        while not await _answers(f"127.0.0.1:{port}"):
            assert proc.poll() is None and time.monotonic() < deadline, "workers did not start"
            await asyncio.sleep(0.2)
        for n in range(2):
            url = f"http://127.0.0.1:{metrics_port + n}/metrics"
            while True:  # the second worker may still be starting
                try:
                    text = await asyncio.to_thread(_fetch, url)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"worker {n} serves no metrics"
                    await asyncio.sleep(0.2)
            assert "faraday_db_pool_connections_idle" in text
    finally:
        assert _terminate(proc) == 0


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())
