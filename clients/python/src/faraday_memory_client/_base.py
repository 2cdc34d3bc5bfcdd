"""The channel, call metadata, deadlines and retries the typed clients share."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from grpc import aio

from faraday_memory_client._retry import ClientConfig, call_stream, call_unary

Metadata = Sequence[tuple[str, str]]
MetadataProvider = Callable[[], Metadata | Awaitable[Metadata]]
"""Returns extra metadata for each call, e.g. ``[("authorization", "Bearer ...")]``."""

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class BaseClient:
    """One channel, and the calls over it: metadata, deadline, retries."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata_provider: MetadataProvider | None = None,
        default_timeout_seconds: float = 5.0,
        max_attempts: int = 3,
        initial_backoff_seconds: float = 0.05,
        max_backoff_seconds: float = 1.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Open a channel to `target` (``host:port``): TLS with `credentials`,
        plaintext without. `options` are grpc channel arguments."""
        self.config = ClientConfig(
            default_timeout_seconds=default_timeout_seconds,
            max_attempts=max_attempts,
            initial_backoff_seconds=initial_backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
        )
        if credentials is None:
            self._channel = aio.insecure_channel(target, options=list(options))
        else:
            self._channel = aio.secure_channel(target, credentials, options=list(options))
        self._metadata_provider = metadata_provider

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling calls in flight."""
        await self._channel.close(grace=None)

    async def _metadata(self) -> Metadata:
        if self._metadata_provider is None:
            return ()
        provided = self._metadata_provider()
        return await provided if inspect.isawaitable(provided) else provided

    def _timeout(self, timeout_seconds: float | None) -> float:
        return self.config.default_timeout_seconds if timeout_seconds is None else timeout_seconds

    async def _call(
        self,
        method: aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        request: RequestT,
        timeout_seconds: float | None,
        *,
        retry: bool,
    ) -> ResponseT:
        return await call_unary(
            method,
            request,
            config=self.config,
            timeout_seconds=self._timeout(timeout_seconds),
            metadata=await self._metadata(),
            retry=retry,
        )

    async def _stream(
        self,
        method: aio.UnaryStreamMultiCallable[RequestT, ResponseT],
        request: RequestT,
        timeout_seconds: float | None,
        *,
        retry: bool,
    ) -> AsyncIterator[ResponseT]:
        stream = call_stream(
            method,
            request,
            config=self.config,
            timeout_seconds=self._timeout(timeout_seconds),
            metadata=await self._metadata(),
            retry=retry,
        )
        async with aclosing(stream):
            async for response in stream:
                yield response
