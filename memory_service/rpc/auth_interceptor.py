"""Authentication, scopes, rate limits, deadlines and auditing for every RPC, in one place.

A grpc.aio server interceptor wraps each method handler so that, before any
servicer code runs, the caller is authenticated from the `authorization`
metadata, checked against the scope the method needs and against its rate
limit, and the request-scoped context is set: the caller (rpc/caller.py),
the acting user for row-level security and the deadline for the statement
timeout (storage/session.py). Health checking and reflection stay open.
Denied calls and sensitive operations are written to the audit log with the
caller, the peer address, the outcome and the ids named in the request.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from faraday.memory.v1 import admin_service_pb2

from memory_service.auth import Authenticator
from memory_service.domain.errors import DomainError, RateLimited
from memory_service.domain.principal import Principal, Scope
from memory_service.rpc import caller
from memory_service.rpc.errors import abort
from memory_service.storage import session
from memory_service.storage.audit import AuditEvent, AuditLog
from memory_service.storage.rate_limit import RateLimiter

_MEMORY = "/faraday.memory.v1.MemoryService/"
_LESSON = "/faraday.memory.v1.LessonService/"
_ADMIN = "/faraday.memory.v1.AdminService/"

# The scope each method needs. A method missing here is refused: a new RPC
# cannot be reachable without someone deciding who may call it.
METHOD_SCOPES: dict[str, Scope] = {
    **{
        _MEMORY + m: Scope.MEMORIES_READ
        for m in ("GetMemory", "ListMemories", "RecallMemories", "ListInteractions")
    },
    **{
        _MEMORY + m: Scope.MEMORIES_WRITE
        for m in ("StoreMemory", "UpdateMemory", "DeleteMemory", "RecordFeedback")
    },
    **{_LESSON + m: Scope.LESSONS_READ for m in ("GetLesson", "ListLessons", "SearchLessons")},
    **{
        _ADMIN + m: Scope.ADMIN
        for m in (
            "UpsertUser",
            "UpsertUserPreferences",
            "UpsertSubjectCategory",
            "UpsertAssistantProfile",
            "UpsertLesson",
            "DeleteLesson",
            "DeleteUserData",
            "ExportUserData",
        )
    },
}
# Sensitive operations: audited whatever their outcome.
AUDITED = frozenset(
    {_MEMORY + "UpdateMemory", _MEMORY + "DeleteMemory"}
    | {m for m, scope in METHOD_SCOPES.items() if scope is Scope.ADMIN}
)
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Request fields worth recording in the audit log (ids, never content).
_AUDIT_FIELDS = ("id", "user_id", "memory_id")
_AUDIT_MESSAGES = ("memory", "lesson", "user", "preferences", "category", "profile")


def _resource(request: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for holder, prefix in [(request, "")] + [
        (getattr(request, name), f"{name}.") for name in _AUDIT_MESSAGES if hasattr(request, name)
    ]:
        for name in _AUDIT_FIELDS:
            value = getattr(holder, name, None)
            if value not in (None, "", 0):
                found[prefix + name] = value
    return found


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, authenticator: Authenticator, limiter: RateLimiter, audit: AuditLog) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._audit = audit
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        # One wrapped handler per method, built once: the credentials are read
        # from each call's context, so nothing per call is allocated here.
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(handler, method)
        return wrapped

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, method),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no streaming-request methods in this API

    async def _admit(self, method: str, request: Any, context: Any) -> Principal:
        """Authenticate, authorize, rate-limit; abort (and audit) a denied call."""
        principal: Principal | None = None
        try:
            principal = self._authenticator.authenticate(_authorization(context))
            scope = METHOD_SCOPES.get(method)
            if scope is None:
                raise DomainError(f"{method} is not callable")  # -> INTERNAL: a wiring bug
            principal.require(scope)
            if self._limiter.enabled:
                wait = await self._limiter.check(principal.key)
                if wait > 0:
                    raise RateLimited(wait)
        except DomainError as error:
            if not isinstance(error, RateLimited):
                await self._record(method, principal, error.reason, request, context.peer())
            await abort(context, error)
        return principal

    def _enter(self, principal: Principal, context: Any) -> None:
        caller.current.set(principal)
        session.acting_user.set(
            str(principal.user_id) if principal.user_id is not None else session.ALL_USERS
        )
        remaining = context.time_remaining()
        session.deadline.set(time.monotonic() + remaining if remaining is not None else None)

    def _unary(
        self, behavior: Callable[[Any, Any], Awaitable[Any]], method: str
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def guarded(request: Any, context: Any) -> Any:
            principal = await self._admit(method, request, context)
            self._enter(principal, context)
            if method not in AUDITED:
                return await behavior(request, context)
            peer = context.peer()
            outcome, summary = "CANCELLED", {}
            try:
                response = await behavior(request, context)
                outcome, summary = "OK", _summary(response)
                return response
            except grpc.aio.AbortError:
                outcome = _outcome(context)
                raise
            finally:
                await self._record(method, principal, outcome, request, peer, summary)

        return guarded

    def _stream(
        self, behavior: Callable[[Any, Any], AsyncIterator[Any]], method: str
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def guarded(request: Any, context: Any) -> AsyncIterator[Any]:
            principal = await self._admit(method, request, context)
            self._enter(principal, context)
            # Read now: after a client cancel the call is gone, and asking a
            # finished call for its peer crashes inside grpc's C core.
            peer = context.peer()
            outcome = "CANCELLED"
            try:
                async for response in behavior(request, context):
                    yield response
                outcome = "OK"
            except grpc.aio.AbortError:
                outcome = _outcome(context)
                raise
            finally:
                if method in AUDITED:
                    await self._record(method, principal, outcome, request, peer)

        return guarded

    async def _record(
        self,
        method: str,
        principal: Principal | None,
        outcome: str,
        request: Any,
        peer: str,
        summary: dict[str, Any] | None = None,
    ) -> None:
        await self._audit.record(
            AuditEvent(
                actor_kind=principal.kind if principal else "anonymous",
                actor=principal.name if principal else "anonymous",
                method=method,
                outcome=outcome,
                peer=peer,
                resource=_resource(request) | (summary or {}),
            )
        )


def _summary(response: Any) -> dict[str, Any]:
    """What an erasure removed: the audit log keeps the counts, never the data."""
    if isinstance(response, admin_service_pb2.DeleteUserDataResponse):
        return {
            "erased": {
                "memories": response.memories,
                "interactions": response.interactions,
                "lessons": response.lessons,
                "preferences": response.preferences,
            }
        }
    return {}


def _authorization(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


def _outcome(context: Any) -> str:
    """The status code name an aborted call ended with."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else str(code)
