"""Authentication, scopes, rate limits, deadlines and auditing for every RPC, in one place.

A grpc.aio server interceptor wraps each method handler so that, before any
servicer code runs, the caller's address is checked against its budget of
denied calls (domain.denial_budget), the caller is authenticated from the
`authorization` metadata, checked against the scope the method needs and
against its rate limit, and the request-scoped context is set: the caller
(rpc/caller.py), the acting user for row-level security, the actor that
memory revisions name and the deadline for the statement timeout
(storage/session.py). Health checking and
reflection stay open.

Audited calls (changes and every AdminService call) get a domain.audit
event for their whole run: a change commits together with its audit row
(storage/audit.py), and a call that committed nothing gets its row
afterwards. Denied calls get a row while their address's budget lasts.
Rows hold only what the server resolved or validated, never request text.

Every way out of here is a documented status: anything unexpected,
interceptor included, is INTERNAL with an error id (rpc/errors.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, NoReturn

import grpc

from memory_service.auth import Authenticator
from memory_service.domain import audit
from memory_service.domain.audit import AuditEvent
from memory_service.domain.denial_budget import DenialBudget, peer_address
from memory_service.domain.errors import (
    DomainError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from memory_service.domain.principal import Principal, Scope
from memory_service.rpc import caller
from memory_service.rpc.errors import abort, answer
from memory_service.storage import session
from memory_service.storage.audit import AuditLog
from memory_service.storage.rate_limit import RateLimiter
from memory_service.telemetry import metrics

logger = logging.getLogger(__name__)

_MEMORY = "/faraday.memory.v1.MemoryService/"
_LESSON = "/faraday.memory.v1.LessonService/"
_ADMIN = "/faraday.memory.v1.AdminService/"

# The scope each method needs. A method missing here is refused: a new RPC
# cannot be reachable without someone deciding who may call it.
METHOD_SCOPES: dict[str, Scope] = {
    **{
        _MEMORY + m: Scope.MEMORIES_READ
        for m in (
            "GetMemory",
            "ListMemories",
            "RecallMemories",
            "ListInteractions",
            "ListMemoryRevisions",
        )
    },
    **{
        _MEMORY + m: Scope.MEMORIES_WRITE
        for m in (
            "StoreMemory",
            "BatchStoreMemories",
            "UpdateMemory",
            "DeleteMemory",
            "RecordFeedback",
        )
    },
    _MEMORY + "ImportMemories": Scope.MEMORIES_IMPORT,
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
# Sensitive operations: audited whatever their outcome. An import writes
# many users' memories with caller-chosen times: one row per stream.
AUDITED = frozenset(
    {_MEMORY + "UpdateMemory", _MEMORY + "DeleteMemory", _MEMORY + "ImportMemories"}
    | {m for m, scope in METHOD_SCOPES.items() if scope is Scope.ADMIN}
)
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        authenticator: Authenticator,
        limiter: RateLimiter,
        audit_log: AuditLog,
        denials: DenialBudget,
    ) -> None:
        self._authenticator = authenticator
        self._limiter = limiter
        self._audit = audit_log
        self._denials = denials
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
        if handler.stream_unary is not None:
            # The behavior takes the request iterator where a unary one takes
            # the request; admission, context and audit are the same.
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # No bidirectional methods in this API: refused, as a method without
        # a scope is, rather than served unauthenticated.
        raise AssertionError(f"{method}: bidirectional streaming is not wired for auth")

    async def _admit(self, method: str, context: Any) -> Principal:
        """Authenticate, authorize, rate-limit; abort (and audit) a denied call."""
        peer = context.peer()
        address = peer_address(peer)
        wait = self._denials.refuse(address, time.monotonic())
        if wait > 0:
            # Refused unheard: no authentication work, no row of its own
            # (counted, and written in aggregate by record_refusals).
            metrics.rate_limited("denied_calls")
            await abort(context, RateLimited(wait))
        principal: Principal | None = None
        try:
            principal = self._authenticator.authenticate(_authorization(context))
            caller.current.set(principal)  # for the access log, even if refused below
            scope = METHOD_SCOPES.get(method)
            if scope is None:
                raise DomainError(f"{method} is not callable")  # -> INTERNAL: a wiring bug
            principal.require(scope)
        except (Unauthenticated, PermissionDenied) as error:
            await self._deny(method, principal, address, peer, error, context)
        if self._limiter.enabled:
            wait = await self._limiter.check(principal.key)
            if wait > 0:
                metrics.rate_limited("credential")
                await abort(context, RateLimited(wait))
        return principal

    async def _deny(
        self,
        method: str,
        principal: Principal | None,
        address: str,
        peer: str,
        error: DomainError,
        context: Any,
    ) -> NoReturn:
        """Spend the address's (and the credential's) budget, audit within it, abort."""
        heard = self._denials.charge(address, time.monotonic())
        if principal is not None and self._limiter.enabled:
            await self._limiter.check(principal.key)  # a denial costs the credential a call
        if heard:
            # Raises Unavailable (-> UNAVAILABLE) if the row cannot be written:
            # a denial is never left unaudited silently.
            await self._audit.record(_event(principal, method, peer, error.reason))
        await abort(context, error)

    def _enter(self, principal: Principal, context: Any) -> None:
        caller.current.set(principal)
        session.acting_user.set(
            str(principal.user_id) if principal.user_id is not None else session.ALL_USERS
        )
        session.acting_profiles.set(principal.assistant_profile_ids)
        session.actor.set(principal.key)  # who changed a memory, in its revisions
        remaining = context.time_remaining()
        session.deadline.set(time.monotonic() + remaining if remaining is not None else None)

    def _unary(
        self, behavior: Callable[[Any, Any], Awaitable[Any]], method: str
    ) -> Callable[[Any, Any], Awaitable[Any]]:
        async def guarded(request: Any, context: Any) -> Any:
            try:
                principal = await self._admit(method, context)
                self._enter(principal, context)
                if method not in AUDITED:
                    return await behavior(request, context)
                event = _event(principal, method, context.peer())
                audit.current.set(event)
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    await self._record_failure(event, _outcome(context, exc))
                    raise
                if not event.written:  # it changed nothing: the row on its own
                    await self._audit.record(event)
                return response
            except Exception as exc:
                await answer(context, exc, method)

        return guarded

    def _stream(
        self, behavior: Callable[[Any, Any], AsyncIterator[Any]], method: str
    ) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def guarded(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                principal = await self._admit(method, context)
                self._enter(principal, context)
                if method not in AUDITED:
                    async for response in behavior(request, context):
                        yield response
                    return
                # Read now: after a client cancel the call is gone, and asking a
                # finished call for its peer crashes inside grpc's C core.
                event = _event(principal, method, context.peer())
                audit.current.set(event)
                try:
                    async for response in behavior(request, context):
                        if not event.written:  # before the first record leaves
                            await self._audit.record(event)
                        yield response
                except BaseException as exc:
                    if event.written:  # it failed part-way: a second row says how
                        event = replace(event, written=False)
                    await self._record_failure(event, _outcome(context, exc))
                    raise
                if not event.written:
                    await self._audit.record(event)
            except Exception as exc:
                await answer(context, exc, method)

        return guarded

    async def _record_failure(self, event: AuditEvent, outcome: str) -> None:
        """The row of a call that failed; the call's own status stands either way."""
        if event.written:  # its change committed, with its row, before the failure
            return
        event.outcome = outcome
        try:
            await self._audit.record(event)
        except Exception:
            logger.exception("audit row NOT written for a failed call: %s", event)

    async def record_refusals(self) -> int:
        """Write the calls refused unheard since the last time: a row per address.

        If the rows cannot be written the counts are kept for the next try
        and the error is raised.
        """
        refusals = self._denials.take_refusals()
        if not refusals:
            return 0
        events = [
            AuditEvent(
                actor_kind="anonymous",
                actor="anonymous",
                method="*",
                peer=address,
                outcome=RateLimited.reason,
                resource={"refused_calls": count},
            )
            for address, count in refusals.items()
        ]
        try:
            await self._audit.record_all(events)
        except BaseException:
            self._denials.keep_refusals(refusals)
            logger.error("audit rows for %d refused calls not written yet", sum(refusals.values()))
            raise
        return len(events)


def _event(principal: Principal | None, method: str, peer: str, outcome: str = "OK") -> AuditEvent:
    return AuditEvent(
        actor_kind=principal.kind if principal else "anonymous",
        actor=principal.name if principal else "anonymous",
        method=method,
        peer=peer,
        outcome=outcome,
    )


def _authorization(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


def _outcome(context: Any, exc: BaseException) -> str:
    """The status code name a failed call ended with."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "INTERNAL"
