"""Small helpers shared by the RPC tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
from faraday.memory.v1 import admin_service_pb2, admin_service_pb2_grpc, registry_pb2
from google.rpc import error_details_pb2, status_pb2

from memory_service.server import RunningServer


async def register_user(
    admin_stub: admin_service_pb2_grpc.AdminServiceStub, email: str | None = None
) -> str:
    """Register a user through the real AdminService; return its id."""
    email = email or f"teacher-{uuid.uuid4().hex[:8]}@school.example.org"
    user = await admin_stub.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(email=email, name="Test Teacher", is_active=True)
        )
    )
    return user.id


async def recalls_written(*servers: RunningServer) -> None:
    """Write the servers' queued recall bookkeeping (interaction rows, last-access bumps) now.

    A recall queues it and its server writes it every
    FARADAY_RECALL_LOG_INTERVAL_SECONDS (storage/recall_log.py): a test that
    reads it straight after a recall, through SQL or GetMemory, waits here.
    """
    for server in servers:
        if server.recall_log is not None:
            await server.recall_log.flush()


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)  # type: ignore[arg-type]
            return status
    raise AssertionError(f"no status details on {error.code()}: {error.details()}")


def error_reasons(error: grpc.aio.AioRpcError) -> list[str]:
    """The reasons of the google.rpc.ErrorInfo details of an error."""
    reasons: list[str] = []
    for detail in status_details(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
    return reasons


async def set_user_active(
    admin_stub: admin_service_pb2_grpc.AdminServiceStub, user_id: str, email: str, active: bool
) -> None:
    """Activate or deactivate a registered user (its other fields are replaced)."""
    changed = await admin_stub.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(id=user_id, email=email, is_active=active)
        )
    )
    assert changed.id == user_id and changed.is_active is active


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths of the google.rpc.BadRequest detail of an INVALID_ARGUMENT error."""
    fields: list[str] = []
    for detail in status_details(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


class LossyProxy(grpc.GenericRpcHandler):
    """A real gRPC server in front of the real one, forwarding raw request bytes.

    The first call of `lose` is forwarded, and so committed by the real server,
    but answered UNAVAILABLE: a response lost on the way back. A streaming
    `lose` (in `streams`) passes `lose_after` responses of its first call on
    before that. Later calls are forwarded normally. `seen` keeps the request
    bytes of every call by method.
    """

    def __init__(
        self,
        upstream: grpc.aio.Channel,
        lose: str,
        *,
        streams: frozenset[str] = frozenset(),
        lose_after: int = 0,
    ) -> None:
        self._upstream = upstream
        self._lose = lose
        self._streams = streams
        self._lose_after = lose_after
        self.seen: dict[str, list[bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method

        def record(request: bytes) -> bool:
            """Note the call; return whether it is the one to lose."""
            attempts = self.seen.setdefault(method, [])
            attempts.append(request)
            return method == self._lose and len(attempts) == 1

        def metadata(context: grpc.aio.ServicerContext[bytes, bytes]) -> list[tuple[str, str]]:
            return [
                (key, value)
                for key, value in context.invocation_metadata() or ()
                if not key.startswith(":") and key != "user-agent"
            ]

        if method in self._streams:
            stream = self._upstream.unary_stream(method)  # no serializers: bytes in, bytes out

            async def forward_stream(
                request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
            ) -> AsyncIterator[bytes]:
                lose = record(request)
                call = stream(request, metadata=metadata(context), timeout=context.time_remaining())
                sent = 0
                try:
                    async for response in call:
                        if lose and sent == self._lose_after:
                            break
                        yield response
                        sent += 1
                except grpc.aio.AioRpcError as error:
                    await context.abort(
                        error.code(), error.details() or "", error.trailing_metadata() or ()
                    )
                call.cancel()
                if lose:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "stream lost")

            return grpc.unary_stream_rpc_method_handler(forward_stream)

        call = self._upstream.unary_unary(method)  # no serializers: bytes in, bytes out

        async def forward(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            lose = record(request)
            try:
                response: bytes = await call(
                    request, metadata=metadata(context), timeout=context.time_remaining()
                )
            except grpc.aio.AioRpcError as error:
                await context.abort(
                    error.code(), error.details() or "", error.trailing_metadata() or ()
                )
            if lose:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "response lost after commit")
            return response

        return grpc.unary_unary_rpc_method_handler(forward)
