"""The channels, call metadata and deadlines the typed clients share."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import cached_property
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from grpc import aio

from faraday_memory_client._service_config import ClientConfig

Metadata = Sequence[tuple[str, str]]
MetadataProvider = Callable[[], Metadata | Awaitable[Metadata]]
"""Returns extra metadata for each call, e.g. ``[("authorization", "Bearer ...")]``."""

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class BaseClient:
    """The channels, and the calls over them: metadata and deadline.

    Retries are gRPC's own, configured per method by ``service_config.json``.
    A few calls of a retried method must not be repeated because of what the
    request holds (a store without request id, a lesson created without id):
    they go over a second channel with retries off, opened on first use.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata_provider: MetadataProvider | None = None,
        default_timeout_seconds: float = 5.0,
        max_attempts: int | None = None,
        initial_backoff_seconds: float | None = None,
        max_backoff_seconds: float | None = None,
        load_balancing: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Open a channel to `target` (``host:port``, or a gRPC name such as
        ``dns:///memory.internal:50051`` that resolves to several replicas):
        TLS with `credentials`, plaintext without. `options` are grpc channel
        arguments. The retry arguments left at None keep the values of
        ``service_config.json`` (3 attempts, backoff from 0.05 s doubling up
        to 1 s). `load_balancing="round_robin"` spreads calls over every
        address the target resolves to (gRPC's default uses one)."""
        self.config = ClientConfig(
            default_timeout_seconds=default_timeout_seconds,
            max_attempts=max_attempts,
            initial_backoff_seconds=initial_backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            load_balancing=load_balancing,
        )
        self._target = target
        self._credentials = credentials
        self._options = list(options)
        self._channel = self._open(retries=True)
        self._metadata_provider = metadata_provider

    def _open(self, *, retries: bool) -> aio.Channel:
        options = [*self.config.channel_options(retries=retries), *self._options]
        if self._credentials is None:
            return aio.insecure_channel(self._target, options=options)
        return aio.secure_channel(self._target, self._credentials, options=options)

    @cached_property
    def _once_channel(self) -> aio.Channel:
        """A channel that never retries, for the calls that must be sent at most once."""
        return self._open(retries=False)

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
        """Close the channels, cancelling calls in flight."""
        await self._channel.close(grace=None)
        if "_once_channel" in self.__dict__:
            await self._once_channel.close(grace=None)

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
    ) -> ResponseT:
        """Call `method`; its channel and the service config decide the retries.

        `timeout_seconds` bounds the whole call, all attempts included.
        DEADLINE_EXCEEDED is never retried, even for an idempotent call: the
        deadline is the caller's budget for the whole call, and once it has
        passed there is no time left for another attempt.
        """
        return await method(
            request, timeout=self._timeout(timeout_seconds), metadata=tuple(await self._metadata())
        )

    async def _stream(
        self,
        method: aio.UnaryStreamMultiCallable[RequestT, ResponseT],
        request: RequestT,
        timeout_seconds: float | None,
    ) -> AsyncIterator[ResponseT]:
        """Call the server-streaming `method` and yield its responses.

        As :meth:`_call`, with `timeout_seconds` bounding the whole stream; a
        retried method is retried only before its first response. Leaving the
        iteration early (``break``, an exception, ``aclose()``) cancels the call.
        """
        call = method(
            request, timeout=self._timeout(timeout_seconds), metadata=tuple(await self._metadata())
        )
        try:
            async for response in call:
                yield response
        finally:
            call.cancel()  # a no-op once the call has ended
