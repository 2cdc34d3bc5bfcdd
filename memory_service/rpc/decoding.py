"""Servicer registration that answers undecodable requests with INVALID_ARGUMENT.

The generated `add_*Servicer_to_server` functions hand grpc the message
class's `FromString` as the request deserializer. When the request bytes are
not a valid message (corrupt wire format, a string field holding invalid
UTF-8, nesting beyond protobuf's recursion limit), grpc.aio logs the
DecodeError as an unexpected exception and answers UNKNOWN: a client bug
reported as a server bug.

`add_servicer` registers a servicer from its service descriptor instead. The
request deserializer never raises: bytes that fail to parse become an
`Undecodable` marker, and the method's behavior, wrapped, answers that marker
with INVALID_ARGUMENT (google.rpc.ErrorInfo reason MALFORMED_REQUEST) before
the servicer runs. Parsing stays where grpc does it, so interceptors that wrap
behaviors still receive real messages for every valid request.

    decoding.add_servicer(
        MemoryServicer(...),
        memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"],
        server,
    )

Servicer methods are expected to be coroutine functions (or async generator
functions for response-streaming RPCs); a plain function, such as the
generated base class's UNIMPLEMENTED stub, is called as is. For a
client-streaming RPC (stream in, one response out) the behavior receives the
request iterator with every message checked as it arrives: the first
undecodable one ends the call with the same INVALID_ARGUMENT, and what the
servicer committed for the messages before it stays committed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor, message_factory
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from memory_service.rpc.errors import ERROR_DOMAIN
from memory_service.telemetry.request_id import with_request_id

REASON = "MALFORMED_REQUEST"

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Undecodable:
    """What the deserializer returns for bytes that are not a valid request message."""

    message_type: str
    error: str


def _deserializer(message_class: Any) -> Callable[[bytes], Any]:
    full_name = message_class.DESCRIPTOR.full_name

    def deserialize(raw: bytes) -> Any:
        try:
            return message_class.FromString(raw)
        except (DecodeError, RecursionError, ValueError, TypeError) as exc:
            # upb says "Error parsing message with type 'X': why"; keep the why.
            why = str(exc).rpartition("': ")[2] or "not parseable"
            return Undecodable(full_name, why)

    return deserialize


def malformed_status(marker: Undecodable) -> status_pb2.Status:
    """The INVALID_ARGUMENT status for an undecodable request."""
    info = error_details_pb2.ErrorInfo(
        reason=REASON, domain=ERROR_DOMAIN, metadata={"message_type": marker.message_type}
    )
    packed = any_pb2.Any()
    packed.Pack(info)
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message=f"the request is not a valid {marker.message_type} message: {marker.error}",
        details=[packed],
    )


async def _reject(context: Context, marker: Undecodable) -> None:
    status = rpc_status.to_status(malformed_status(marker))
    await context.abort(status.code, status.details, with_request_id(status.trailing_metadata))


def _wrap(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Reject an Undecodable request before `behavior` sees it; keep the behavior's kind."""
    if inspect.isasyncgenfunction(behavior):

        @functools.wraps(behavior)
        async def stream_wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _reject(context, request)
            async for response in behavior(request, context):
                yield response

        return stream_wrapper

    @functools.wraps(behavior)
    async def wrapper(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await _reject(context, request)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return wrapper


def _wrap_client_stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """As _wrap, for a behavior reading a stream of requests."""

    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await _reject(context, request)  # raises grpc's AbortError
            yield request

    @functools.wraps(behavior)
    async def wrapper(requests: AsyncIterator[Any], context: Context) -> Any:
        result = behavior(checked(requests, context), context)
        return await result if inspect.isawaitable(result) else result

    return wrapper


def method_handler(
    servicer: object, method: descriptor.MethodDescriptor
) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler of one RPC of `servicer`, with a deserializer that never raises."""
    if method.client_streaming and method.server_streaming:  # none in this API
        raise ValueError(f"{method.full_name}: bidirectional streaming is not supported")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    deserialize = _deserializer(request_class)
    serialize = response_class.SerializeToString
    factory: Any
    if method.client_streaming:
        behavior = _wrap_client_stream(getattr(servicer, method.name))
        factory = grpc.stream_unary_rpc_method_handler
    else:
        behavior = _wrap(getattr(servicer, method.name))
        factory = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
    handler: grpc.RpcMethodHandler[Any, Any] = factory(
        behavior, request_deserializer=deserialize, response_serializer=serialize
    )
    return handler


def add_servicer(
    servicer: object, service: descriptor.ServiceDescriptor, server: grpc.aio.Server
) -> None:
    """Register every RPC of `service` on `server`, like the generated add_*_to_server."""
    handlers = {method.name: method_handler(servicer, method) for method in service.methods}
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    # As the generated code does since grpc 1.62 (missing from grpc-stubs):
    # registered methods skip the generic handler lookup.
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:
        register(service.full_name, handlers)
