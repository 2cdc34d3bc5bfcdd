"""Every RPC observed: its request id, its metrics and its access log line.

This interceptor runs before the auth interceptor (server.py), so calls the
latter denies or refuses are counted and logged like any other. It sets the
request id (telemetry/request_id.py) for the call's log lines and returns it
in the trailing metadata; when the call ends it records the method, status
code and duration (telemetry/metrics.py) and writes one access log line on
the `memory_service.access` logger: request id, caller, method, status and
duration, never the request itself or a credential. Health checks and
reflection are counted but not logged (load balancers poll them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from memory_service.rpc import caller
from memory_service.telemetry import metrics, request_id, tracing

access_log = logging.getLogger("memory_service.access")

_UNLOGGED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self) -> None:
        # method -> (the next interceptor's handler, ours around it)
        self._wrapped: dict[str, tuple[Any, grpc.RpcMethodHandler[Any, Any]]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None:
            return handler
        # The next interceptor hands back the same handler for a method
        # every time, so ours is built once per method, not per call.
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        log = not method.startswith(_UNLOGGED)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method, log),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream, method, log),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _unary(handler.stream_unary, method, log),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:  # Health has none; reflection's is one
            return grpc.stream_stream_rpc_method_handler(
                _stream(handler.stream_stream, method, log),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _begin(context: Any, log: bool) -> tuple[str, float]:
    rid = request_id.from_metadata(context.invocation_metadata())
    request_id.current.set(rid)
    if log:
        # Until the auth interceptor names the caller; a denied call stays anonymous.
        caller.current.set(caller.ANONYMOUS)
    # Trailing metadata, not initial: servicers send initial metadata of
    # their own, and errors.abort adds the id to an error's trailers.
    context.set_trailing_metadata(((request_id.HEADER, rid),))
    return context.peer(), time.perf_counter()


def _unary(
    behavior: Callable[[Any, Any], Awaitable[Any]], method: str, log: bool
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def observed(request: Any, context: Any) -> Any:
        peer, started = _begin(context, log)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end(method, context, error, started, peer, log)

    return observed


def _stream(
    behavior: Callable[[Any, Any], Any], method: str, log: bool
) -> Callable[[Any, Any], Any]:
    if not inspect.isasyncgenfunction(behavior):
        # A streaming handler that writes with context.write() and returns,
        # as grpc's own health Watch does: observed like a unary one.
        return _unary(behavior, method, log)

    async def observed(request: Any, context: Any) -> AsyncIterator[Any]:
        peer, started = _begin(context, log)
        error: BaseException | None = None
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            error = exc
            raise
        finally:
            _end(method, context, error, started, peer, log)

    return observed


def status_name(context: Any, error: BaseException | None) -> str:
    """The status code the call ends with, by name."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    # No code set: a normal return is OK; anything else grpc answers UNKNOWN.
    return "OK" if error is None else "UNKNOWN"


def _end(
    method: str,
    context: Any,
    error: BaseException | None,
    started: float,
    peer: str,
    log: bool,
) -> None:
    seconds = time.perf_counter() - started
    code = status_name(context, error)
    metrics.rpc_finished(method, code, seconds)
    if not log or not access_log.isEnabledFor(logging.INFO):
        return
    name = caller.current.get().key
    duration_ms = round(seconds * 1000, 3)
    line = (method, code, duration_ms, name, peer, tracing.current_trace_id())
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # an async generator finalized outside the loop
        _write_access_line(*line)
        return
    # Formatted and written on the loop's next turn, once grpc has the
    # response: the line's ~20 us of formatting and write() are off the
    # call's latency (bench/README.md). The callback runs in this call's
    # context, so the line still carries its request id.
    loop.call_soon(_write_access_line, *line)


def _write_access_line(
    method: str, code: str, duration_ms: float, name: str, peer: str, trace_id: str
) -> None:
    access_log.info(
        "%s %s %.1f ms caller=%s",
        method,
        code,
        duration_ms,
        name,
        extra={
            "method": method,
            "code": code,
            "duration_ms": duration_ms,
            "caller": name,
            "peer": peer,
            "trace_id": trace_id,
        },
    )
