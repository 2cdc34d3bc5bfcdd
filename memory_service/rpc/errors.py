"""Every status-code decision: one table from domain error to gRPC status.

The table is looked up along the exception's class hierarchy (the Starlette
way), so a new DomainError subclass needs no new code here. Anything not in
the table is a bug: it is logged with its traceback and answered INTERNAL
with an opaque error id, never with the exception's text.
"""

from __future__ import annotations

import functools
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from faraday.memory.v1 import memory_service_pb2
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from memory_service.domain.errors import (
    AlreadyExists,
    Contention,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    StaleEtag,
    Unauthenticated,
    Unavailable,
)
from memory_service.domain.validation import VIOLATIONS_MAX_COUNT
from memory_service.telemetry.request_id import with_request_id

logger = logging.getLogger(__name__)

ERROR_DOMAIN = "memory.faraday.ai"
_PUSHBACK_KEY = "grpc-retry-pushback-ms"

STATUS_CODES: dict[type[DomainError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    AlreadyExists: code_pb2.ALREADY_EXISTS,
    StaleEtag: code_pb2.ABORTED,
    Contention: code_pb2.ABORTED,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    Unavailable: code_pb2.UNAVAILABLE,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
    RateLimited: code_pb2.RESOURCE_EXHAUSTED,
    DeadlineExceeded: code_pb2.DEADLINE_EXCEEDED,
}


def status_code_for(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return int(code_pb2.INTERNAL)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: DomainError) -> status_pb2.Status:
    """Code, message and details from one object, so they can never disagree.

    An INVALID_ARGUMENT lists at most VIOLATIONS_MAX_COUNT field violations
    and says in its message and ErrorInfo metadata `omitted_violations` how
    many more there were: the status travels in trailing metadata, which
    clients cap (16 KiB by default in grpc), and a bigger one reaches them
    as RESOURCE_EXHAUSTED instead of the error.
    """
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
    bad_request = None
    if isinstance(error, InvalidArgument):
        shown = error.violations[:VIOLATIONS_MAX_COUNT]
        error = InvalidArgument(shown, omitted=error.omitted + len(error.violations) - len(shown))
        if error.omitted:
            info.metadata["omitted_violations"] = str(error.omitted)
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in shown
            ]
        )
    details = [_pack(info)]
    if bad_request is not None:
        details.append(_pack(bad_request))
    retry_after_ms = _retry_after_ms(error)
    if retry_after_ms is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMilliseconds(retry_after_ms)
        details.append(_pack(retry))
    return status_pb2.Status(code=status_code_for(error), message=error.message, details=details)


def _retry_after_ms(error: DomainError) -> int | None:
    """How long a caller should wait before trying `error`'s call again, if it may."""
    if isinstance(error, RateLimited):
        return max(1, round(error.retry_after_seconds * 1000))
    if isinstance(error, Unavailable):
        return 500
    return None


def item_error(error: DomainError) -> memory_service_pb2.ItemError:
    """What StoreMemory would have answered, as one BatchStoreMemories item's error."""
    status = to_status(error)
    violations: list[memory_service_pb2.FieldViolation] = []
    if isinstance(error, InvalidArgument):
        violations = [
            memory_service_pb2.FieldViolation(field=v.field, description=v.description)
            for v in error.violations[:VIOLATIONS_MAX_COUNT]
        ]
    return memory_service_pb2.ItemError(
        code=status.code,
        message=status.message,
        field_violations=violations,
        reason=error.reason,
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DomainError) -> NoReturn:
    status = rpc_status.to_status(to_status(error))
    # Trailers given to abort replace the ones set earlier: the request id again.
    trailers = with_request_id(tuple(status.trailing_metadata))
    retry_after_ms = _retry_after_ms(error)
    if retry_after_ms is not None:
        # The same delay as RetryInfo, in the trailer gRPC's own retry policy
        # reads (gRFC A6 server pushback): clients in every language that use
        # clients/python/src/faraday_memory_client/service_config.json wait
        # this long before their next attempt, with no code of their own.
        trailers += ((_PUSHBACK_KEY, str(retry_after_ms)),)
    await context.abort(status.code, status.details, trailers)
    raise AssertionError("abort returned")  # pragma: no cover


R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[R]]


async def answer(
    context: grpc.aio.ServicerContext[Any, Any], exc: Exception, where: str
) -> NoReturn:
    """The status for an exception raised while serving (CancelledError never gets here)."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc
    if isinstance(exc, DomainError):
        await abort(context, exc)
    error_id = uuid.uuid4().hex[:12]
    logger.error("internal error %s in %s", error_id, where, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error (error id {error_id}); see server log"
    )
    raise AssertionError("abort returned") from exc  # pragma: no cover


def translated(handler: Handler[R]) -> Handler[R]:
    """Wrap one unary servicer method: domain errors become statuses, bugs INTERNAL.

    CancelledError (the caller went away or its deadline passed) is a
    BaseException and passes through untouched, so grpc and asyncpg (which
    cancels the running query) see it.
    """

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await answer(context, exc, handler.__qualname__)

    return wrapper


def translated_stream(
    handler: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    """The same for a response-streaming method: a failure ends the stream with its status."""

    @functools.wraps(handler)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            async for response in handler(self, request, context):
                yield response
        except Exception as exc:
            await answer(context, exc, handler.__qualname__)

    return wrapper


C = TypeVar("C", bound=type)


def translate_errors(cls: C) -> C:
    """Class decorator: wrap every RPC method the servicer defines (unary and streaming)."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if inspect.iscoroutinefunction(member):
            setattr(cls, name, translated(member))
        elif inspect.isasyncgenfunction(member):
            setattr(cls, name, translated_stream(member))
    return cls
