"""The packaged client against the real server: the calls other services make."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    memory_pb2,
    memory_service_pb2,
)
from faraday_memory_client import MemoryClient, field_violations

from memory_service.server import RunningServer
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def auth_calls() -> list[str]:
    return []


@pytest.fixture
async def client(server: RunningServer, auth_calls: list[str]) -> AsyncIterator[MemoryClient]:
    async def auth() -> Sequence[tuple[str, str]]:
        auth_calls.append("called")
        return [("authorization", "Bearer test-token")]

    async with MemoryClient(
        f"127.0.0.1:{server.port}", metadata_provider=auth, default_timeout_seconds=5
    ) as c:
        yield c


async def test_metadata_and_time_filters_through_the_client(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    wanted = await client.store_memory(
        user_id=user, content="Unit 7 quiz", category="fact", metadata={"unit": 7}
    )
    await client.store_memory(user_id=user, content="Unit 8", category="fact", metadata={"unit": 8})
    since = datetime(2020, 1, 1, tzinfo=UTC)
    recalled = await client.recall(
        user,
        metadata_filter={"unit": 7},
        update_time_start=since,
        last_access_time_end=datetime.now(UTC) + timedelta(days=1),
        skip_access_tracking=True,
    )
    assert [s.memory.id for s in recalled] == [wanted.id]
    listed = await client.list_memories(
        user, metadata_filter={"unit": 7}, update_time_start=since, last_access_time_end=since
    )
    assert [m.id for m in listed.memories] == [wanted.id]  # never accessed: before every time
    again = await client.get_memory(wanted.id)
    assert not again.HasField("last_access_time")


async def test_store_recall_feedback_through_the_client(client, admin_stub, auth_calls) -> None:
    user = await register_user(admin_stub)
    memory = await client.store_memory(
        user_id=user,
        content="Prefers visual fraction models",
        category="preference",
        importance=0.7,
        tags=["math"],
        context={"class": "7B"},
    )
    recalled = await client.recall(user, "fractions", limit=5, context={"class": "7B"})
    assert [s.memory.id for s in recalled] == [memory.id]
    response = await client.record_feedback(memory.id, rating=5)
    assert response.memory.importance == pytest.approx(0.7 + 0.2 * 0.3)
    ids = [m.id async for m in client.iter_memories(user, page_size=1)]
    assert ids == [memory.id]
    # The feedback moved importance: the old value is a revision.
    revisions = await client.list_memory_revisions(memory.id, page_size=10)
    assert [(r.version, r.importance) for r in revisions.revisions] == [(1, pytest.approx(0.7))]
    assert revisions.next_page_token == ""
    assert len(auth_calls) == 5  # the metadata hook ran once per call


async def test_client_surfaces_field_violations(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.store_memory(user_id=user, content="", category="fact")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(info.value)] == ["memory.content"]


async def test_lessons_through_the_client(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    lesson = await admin_stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(
                title="Dividing fractions with models",
                user_id=user,
                grade_level="7",
                status=lesson_pb2.LESSON_STATUS_PUBLISHED,
            )
        )
    )
    assert (await client.get_lesson(lesson.id)).title == lesson.title
    listed = await client.list_lessons(user_id=user, week_of_start=date(2000, 1, 1))
    assert list(listed.lessons) == []  # week_of unset: outside any week range
    found = await client.search_lessons("fraction")
    assert [m.lesson.id for m in found.matches] == [lesson.id]


_STORE = "/faraday.memory.v1.MemoryService/StoreMemory"
_FEEDBACK = "/faraday.memory.v1.MemoryService/RecordFeedback"


class LossyProxy(grpc.GenericRpcHandler):
    """A real gRPC server in front of the real one, forwarding raw request bytes.

    The first call of `lose` is forwarded, and so committed by the real server,
    but answered UNAVAILABLE: a response lost on the way back. Later calls are
    forwarded normally. `seen` keeps the request bytes of every call by method.
    """

    def __init__(self, upstream: grpc.aio.Channel, lose: str) -> None:
        self._upstream = upstream
        self._lose = lose
        self.seen: dict[str, list[bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        call = self._upstream.unary_unary(method)  # no serializers: bytes in, bytes out

        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            attempts = self.seen.setdefault(method, [])
            attempts.append(request)
            metadata = [
                (key, value)
                for key, value in context.invocation_metadata() or ()
                if not key.startswith(":") and key != "user-agent"
            ]
            try:
                response: bytes = await call(
                    request, metadata=metadata, timeout=context.time_remaining()
                )
            except grpc.aio.AioRpcError as error:
                await context.abort(
                    error.code(), error.details() or "", error.trailing_metadata() or ()
                )
            if method == self._lose and len(attempts) == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "response lost after commit")
            return response

        return grpc.unary_unary_rpc_method_handler(forward)


@pytest.fixture
async def lossy(
    server: RunningServer,
) -> AsyncIterator[Callable[[str], Awaitable[tuple[LossyProxy, MemoryClient]]]]:
    """Start a LossyProxy losing the first response of a method; return it and a client of it."""
    started: list[tuple[grpc.aio.Server, grpc.aio.Channel, MemoryClient]] = []

    async def start(lose: str) -> tuple[LossyProxy, MemoryClient]:
        upstream = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        proxy = LossyProxy(upstream, lose)
        proxy_server = grpc.aio.server()
        proxy_server.add_generic_rpc_handlers((proxy,))
        port = proxy_server.add_insecure_port("127.0.0.1:0")
        await proxy_server.start()
        client = MemoryClient(
            f"127.0.0.1:{port}",
            metadata_provider=lambda: [("authorization", "Bearer test-token")],
            initial_backoff_seconds=0.01,
        )
        started.append((proxy_server, upstream, client))
        return proxy, client

    yield start
    for proxy_server, upstream, client in started:
        await client.close()
        await proxy_server.stop(None)
        await upstream.close(None)


def _request_ids(proxy: LossyProxy, method: str) -> list[str]:
    """The request_id of every call of `method` the proxy saw, parsed from the raw bytes."""
    raws = proxy.seen.get(method, [])
    if method == _STORE:
        return [memory_service_pb2.StoreMemoryRequest.FromString(raw).request_id for raw in raws]
    return [memory_service_pb2.RecordFeedbackRequest.FromString(raw).request_id for raw in raws]


async def test_a_store_retried_after_a_lost_response_stores_once(
    lossy, admin_stub, memory_stub
) -> None:
    user = await register_user(admin_stub)
    proxy, client = await lossy(_STORE)
    memory = await client.store_memory(user_id=user, content="Likes number lines", category="fact")
    assert memory.content == "Likes number lines"
    request_ids = _request_ids(proxy, _STORE)
    assert len(request_ids) == 2  # the lost attempt and the client's retry
    assert request_ids[0] and request_ids[0] == request_ids[1]
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert [m.id for m in listed.memories] == [memory.id]


async def test_feedback_retried_after_a_lost_response_applies_once(
    client, lossy, admin_stub, memory_stub
) -> None:
    user = await register_user(admin_stub)
    memory = await client.store_memory(
        user_id=user, content="Prefers worked examples", category="preference", importance=0.7
    )
    proxy, lossy_client = await lossy(_FEEDBACK)
    response = await lossy_client.record_feedback(memory.id, rating=5)
    once = pytest.approx(0.7 + 0.2 * 0.3)
    assert response.memory.importance == once
    request_ids = _request_ids(proxy, _FEEDBACK)
    assert len(request_ids) == 2
    assert request_ids[0] and request_ids[0] == request_ids[1]
    stored = await memory_stub.GetMemory(memory_service_pb2.GetMemoryRequest(id=memory.id))
    assert stored.importance == once
    interactions = await memory_stub.ListInteractions(
        memory_service_pb2.ListInteractionsRequest(
            memory_id=memory.id, type=memory_pb2.INTERACTION_TYPE_FEEDBACK
        )
    )
    assert [i.id for i in interactions.interactions] == [response.interaction.id]


async def test_an_empty_request_id_is_not_retried(lossy, admin_stub, memory_stub) -> None:
    user = await register_user(admin_stub)
    proxy, client = await lossy(_STORE)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.store_memory(user_id=user, content="x", category="fact", request_id="")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _request_ids(proxy, _STORE) == [""]  # one attempt, no key
    listed = await memory_stub.ListMemories(memory_service_pb2.ListMemoriesRequest(user_id=user))
    assert len(listed.memories) == 1  # the lost attempt did store


async def test_an_explicit_request_id_replays_and_rejects_reuse(client, admin_stub) -> None:
    user = await register_user(admin_stub)
    first = await client.store_memory(
        user_id=user, content="Uses fraction bars", category="fact", request_id="import-42"
    )
    again = await client.store_memory(
        user_id=user, content="Uses fraction bars", category="fact", request_id="import-42"
    )
    assert again.id == first.id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.store_memory(
            user_id=user, content="Something else", category="fact", request_id="import-42"
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(info.value)] == ["request_id"]
