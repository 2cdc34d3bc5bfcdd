"""BatchingEmbedder with the real wordllama model and concurrent callers."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from memory_service.embedding import (
    BatchingEmbedder,
    Embedder,
    EmbedderClosed,
    EmbedderOverloaded,
    Vectors,
)


class Recorded:
    """The real model, recording each call's texts (not a stand-in for it)."""

    def __init__(
        self, model: Embedder, fail_on: str | None = None, gate: threading.Event | None = None
    ) -> None:
        self.model = model
        self.gate = gate
        self.name, self.dimension = model.name, model.dimension
        self.calls: list[list[str]] = []
        self.called = threading.Event()
        self.fail_on = fail_on

    def embed(self, texts: list[str]) -> Vectors:
        self.calls.append(texts)
        self.called.set()
        if self.gate is not None:
            self.gate.wait(timeout=10)
        if self.fail_on in texts:
            raise RuntimeError("model failed")
        return self.model.embed(texts)


def texts_of(caller: int) -> list[str]:
    return [f"caller {caller} remembers lesson {i} on fractions" for i in range(caller % 3 + 1)]


async def test_concurrent_callers_share_model_calls_and_get_their_own_rows(
    wordllama: Embedder,
) -> None:
    model = Recorded(wordllama)
    embedder = BatchingEmbedder(model, max_batch_texts=16, max_wait_seconds=0.005)
    results = await asyncio.gather(*(embedder.embed(texts_of(c)) for c in range(60)))
    for caller, vectors in enumerate(results):
        np.testing.assert_allclose(vectors, wordllama.embed(texts_of(caller)), atol=1e-5)
    assert sum(len(call) for call in model.calls) == sum(len(texts_of(c)) for c in range(60))
    assert all(len(call) <= 16 for call in model.calls)
    assert len(model.calls) <= 120 // 16 + 2  # ~120 texts in full batches, not 60 calls
    await embedder.aclose()


async def test_without_a_wait_requests_arriving_during_a_call_form_the_next_batch(
    wordllama: Embedder,
) -> None:
    model = Recorded(wordllama, gate=threading.Event())
    embedder = BatchingEmbedder(model, max_batch_texts=64)
    first = asyncio.create_task(embedder.embed(["first"]))
    # The model is now busy with "first", held at the gate.
    assert await asyncio.to_thread(model.called.wait, 10)
    later = [asyncio.create_task(embedder.embed([f"text {i}"])) for i in range(40)]
    await asyncio.sleep(0.01)
    assert model.gate is not None
    model.gate.set()
    await asyncio.gather(first, *later)
    assert [len(call) for call in model.calls] == [1, 40]
    await embedder.aclose()


async def test_a_cancelled_caller_is_dropped_and_the_others_are_served(wordllama: Embedder) -> None:
    model = Recorded(wordllama)
    embedder = BatchingEmbedder(model, max_batch_texts=64, max_wait_seconds=0.2)
    cancelled = asyncio.create_task(embedder.embed(["cancelled before its batch"]))
    kept = asyncio.create_task(embedder.embed(["kept"]))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    assert (await kept).shape == (1, 256)
    assert cancelled.cancelled()
    assert model.calls == [["kept"]]
    await embedder.aclose()


async def test_a_full_queue_refuses_at_once(wordllama: Embedder) -> None:
    embedder = BatchingEmbedder(wordllama, max_queued_texts=10, max_wait_seconds=0.05)
    waiting = asyncio.create_task(embedder.embed(["x"] * 8))
    await asyncio.sleep(0)
    with pytest.raises(EmbedderOverloaded):
        await embedder.embed(["y"] * 3)
    assert (await waiting).shape == (8, 256)
    assert (await embedder.embed(["y"] * 3)).shape == (3, 256)  # room again
    await embedder.aclose()


async def test_a_model_error_fails_its_batch_only(wordllama: Embedder) -> None:
    embedder = BatchingEmbedder(Recorded(wordllama, fail_on="poison"), max_wait_seconds=0.01)
    bad, good = await asyncio.gather(
        embedder.embed(["poison"]), embedder.embed(["fine"]), return_exceptions=True
    )
    assert isinstance(bad, RuntimeError) and isinstance(good, RuntimeError)
    assert (await embedder.embed(["fine"])).shape == (1, 256)
    await embedder.aclose()


async def test_close_finishes_queued_work_then_refuses(wordllama: Embedder) -> None:
    embedder = BatchingEmbedder(wordllama, max_wait_seconds=1.0)
    queued = asyncio.create_task(embedder.embed(["queued before close"]))
    await asyncio.sleep(0)
    started = time.monotonic()
    await embedder.aclose()
    assert time.monotonic() - started < 0.5  # closing cuts the wait short
    assert (await queued).shape == (1, 256)
    with pytest.raises(EmbedderClosed):
        await embedder.embed(["too late"])


async def test_the_event_loop_keeps_running_while_the_model_works(wordllama: Embedder) -> None:
    embedder = BatchingEmbedder(wordllama, max_batch_texts=50_000, max_queued_texts=50_000)
    texts = [
        f"a long memory about lesson {i} and the fractions the student got wrong" * 3
        for i in range(10_000)
    ]
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await embedder.embed(texts)
    took = time.perf_counter() - started
    ticker.cancel()
    await embedder.aclose()
    # The model call takes a good fraction of a second; the loop still ticked
    # all along, with no stall near the length of the call.
    assert len(gaps) > 20
    assert max(gaps) < took / 3, (max(gaps), took)
