"""Deadline-bounded retry of calls that are safe to repeat."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc import aio

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Deadline and retry settings of a client (:class:`MemoryClient`, :class:`AdminClient`)."""

    default_timeout_seconds: float = 5.0
    """Deadline of a call (all of its attempts) unless the call overrides it."""
    max_attempts: int = 3
    """Attempts of a retryable call, the first included; 1 disables retries."""
    initial_backoff_seconds: float = 0.05
    """Upper bound of the first backoff; doubles after every attempt."""
    max_backoff_seconds: float = 1.0
    """Cap of the backoff upper bound."""

    def __post_init__(self) -> None:
        if self.default_timeout_seconds <= 0:
            raise ValueError("default_timeout_seconds must be positive")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff_seconds <= self.max_backoff_seconds:
            raise ValueError("need 0 < initial_backoff_seconds <= max_backoff_seconds")


def _backoff(
    error: aio.AioRpcError, *, config: ClientConfig, attempt: int, deadline: float
) -> float | None:
    """The wait before retrying a call whose attempt number `attempt` failed
    with `error`, or None if it must not be retried.

    Only UNAVAILABLE is retried, up to ``config.max_attempts`` attempts, and no
    retry starts whose backoff would end past `deadline` (loop time). Backoff
    is exponential with full jitter: a uniform draw from 0 to
    ``min(max_backoff, initial_backoff * 2 ** (attempt - 1))``.
    """
    if error.code() != grpc.StatusCode.UNAVAILABLE or attempt >= config.max_attempts:
        return None
    ceiling = config.initial_backoff_seconds * 2 ** (attempt - 1)
    backoff = random.uniform(0.0, min(config.max_backoff_seconds, ceiling))
    if asyncio.get_running_loop().time() + backoff >= deadline:
        return None
    return backoff


async def call_unary(
    method: aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
    request: RequestT,
    *,
    config: ClientConfig,
    timeout_seconds: float,
    metadata: Sequence[tuple[str, str]],
    retry: bool,
) -> ResponseT:
    """Call `method`, retrying UNAVAILABLE errors if `retry` is set.

    Set `retry` only for calls the server may safely receive twice: reads,
    and writes carrying an idempotency key (the same `request` object, hence
    the same key, is sent on every attempt).

    `timeout_seconds` bounds the whole call: each attempt gets what is left of
    it (see :func:`_backoff` for when and how long a retry waits). Every other
    status code (DEADLINE_EXCEEDED, INVALID_ARGUMENT, NOT_FOUND, ...) is
    raised at once. DEADLINE_EXCEEDED in particular is never retried, even
    for an idempotent call: the deadline is the caller's budget for the whole
    call, and once it has passed there is no time left for another attempt.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    attempt = 1
    while True:
        try:
            return await method(
                request, timeout=max(deadline - loop.time(), 0.0), metadata=metadata
            )
        except aio.AioRpcError as error:
            backoff = (
                _backoff(error, config=config, attempt=attempt, deadline=deadline)
                if retry
                else None
            )
            if backoff is None:
                raise
        await asyncio.sleep(backoff)
        attempt += 1


async def call_stream(
    method: aio.UnaryStreamMultiCallable[RequestT, ResponseT],
    request: RequestT,
    *,
    config: ClientConfig,
    timeout_seconds: float,
    metadata: Sequence[tuple[str, str]],
    retry: bool,
) -> AsyncGenerator[ResponseT, None]:
    """Call the server-streaming `method` and yield its responses.

    As :func:`call_unary`, with `timeout_seconds` bounding the whole stream,
    except that with `retry` set an UNAVAILABLE error is retried only
    before the first response: a restart after that would yield the
    responses already yielded a second time. Leaving the iteration early
    (``break``, an exception, ``aclose()``) cancels the call.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    attempt = 1
    while True:
        call = method(request, timeout=max(deadline - loop.time(), 0.0), metadata=metadata)
        received = False
        try:
            async for response in call:
                received = True
                yield response
            return
        except aio.AioRpcError as error:
            backoff = (
                _backoff(error, config=config, attempt=attempt, deadline=deadline)
                if retry and not received
                else None
            )
            if backoff is None:
                raise
        finally:
            call.cancel()  # a no-op once the call has ended
        await asyncio.sleep(backoff)
        attempt += 1
