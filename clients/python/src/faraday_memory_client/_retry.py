"""Deadline-bounded retry of idempotent unary calls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from grpc import aio

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Deadline and retry settings of a :class:`MemoryClient`."""

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
    it, and no retry starts whose backoff would end past it. Backoff is
    exponential with full jitter: a uniform draw from 0 to
    ``min(max_backoff, initial_backoff * 2 ** (attempt - 1))``. Every other
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
            if (
                not retry
                or error.code() != grpc.StatusCode.UNAVAILABLE
                or attempt >= config.max_attempts
            ):
                raise
            ceiling = config.initial_backoff_seconds * 2 ** (attempt - 1)
            backoff = random.uniform(0.0, min(config.max_backoff_seconds, ceiling))
            if loop.time() + backoff >= deadline:
                raise
            await asyncio.sleep(backoff)
            attempt += 1
