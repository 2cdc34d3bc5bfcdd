"""BatchingEmbedder: the async front of an Embedder.

The model never runs on the event loop: one worker thread owns it (models
are not thread-safe, and torch already spreads one call over the cores).
Concurrent requests are micro-batched: the batcher takes the first waiting
request, lets others join for up to `max_wait_seconds` or until
`max_batch_texts` texts are in hand, embeds them in one model call and hands
each caller its rows. Requests that arrive while the model is busy form the
next batch, so batches grow with load even with no wait at all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from memory_service.embedding.embedder import (
    Embedder,
    EmbedderClosed,
    EmbedderOverloaded,
    Vectors,
)
from memory_service.telemetry import metrics


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future[Vectors]


class BatchingEmbedder:
    def __init__(
        self,
        model: Embedder,
        *,
        max_batch_texts: int = 64,
        max_wait_seconds: float = 0.0,
        max_queued_texts: int = 1024,
    ) -> None:
        if max_batch_texts < 1 or max_queued_texts < 1 or max_wait_seconds < 0:
            raise ValueError("batch and queue sizes must be positive, the wait not negative")
        self.model = model
        self._max_batch = max_batch_texts
        self._max_wait = max_wait_seconds
        self._max_queued = max_queued_texts
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_texts = 0
        self._arrived = asyncio.Event()
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._batcher: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def dimension(self) -> int:
        return self.model.dimension

    async def embed(self, texts: list[str]) -> Vectors:
        """Unit vectors for `texts` (see Embedder.embed), computed off the loop.

        Raises EmbedderOverloaded at once when more than max_queued_texts would
        be waiting (so no one request may hold more), and EmbedderClosed after
        aclose(). Cancelling the caller drops its texts if their batch has not
        started yet.
        """
        if self._closed:
            raise EmbedderClosed("the embedder is shutting down")
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        if self._queued_texts + len(texts) > self._max_queued:
            raise EmbedderOverloaded(f"{self._queued_texts} texts already wait to be embedded")
        if self._batcher is None:
            self._batcher = asyncio.get_running_loop().create_task(self._run(), name="embedder")
        request = _Request(list(texts), asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._queued_texts += len(request.texts)
        self._arrived.set()
        # A cancelled caller cancels this future; the batcher skips it.
        return await request.future

    async def aclose(self) -> None:
        """Refuse new work, finish what is queued, then stop the worker thread."""
        self._closed = True
        self._arrived.set()
        if self._batcher is not None:
            await self._batcher
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while self._queue or not self._closed:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if self._max_wait > 0:
                await self._let_others_join(asyncio.get_running_loop().time() + self._max_wait)
            await self._embed(self._take_batch())

    async def _let_others_join(self, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while not self._closed and self._queued_texts < self._max_batch:
                    self._arrived.clear()
                    await self._arrived.wait()

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._queue:
            request = self._queue[0]
            if batch and size + len(request.texts) > self._max_batch:
                break
            self._queue.popleft()
            self._queued_texts -= len(request.texts)
            if not request.future.done():  # done here means its caller was cancelled
                batch.append(request)
                size += len(request.texts)
        return batch

    async def _embed(self, batch: list[_Request]) -> None:
        if not batch:
            return
        texts = [text for request in batch for text in request.texts]
        loop = asyncio.get_running_loop()
        try:
            # Not cancellable midway (the thread runs on regardless), so the
            # batcher is never cancelled: aclose() lets it drain instead.
            started = time.perf_counter()
            vectors = await loop.run_in_executor(self._executor, self.model.embed, texts)
            metrics.embedded(self.model.name, len(texts), time.perf_counter() - started)
        except Exception as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        start = 0
        for request in batch:
            end = start + len(request.texts)
            if not request.future.done():
                request.future.set_result(vectors[start:end])
            start = end
