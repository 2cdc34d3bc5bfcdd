"""Model names, and loading the configured model at start-up."""

from __future__ import annotations

from collections.abc import Callable

from memory_service.config import Settings
from memory_service.embedding.batching import BatchingEmbedder
from memory_service.embedding.embedder import Embedder, ModelUnavailable
from memory_service.embedding.minilm_model import NAME as MINILM
from memory_service.embedding.minilm_model import MiniLMEmbedder
from memory_service.embedding.wordllama_model import NAME as WORDLLAMA
from memory_service.embedding.wordllama_model import WordLlamaEmbedder

# Each model's extra, named when its runtime is not installed.
_MODELS: dict[str, tuple[Callable[[], Embedder], str]] = {
    WORDLLAMA: (WordLlamaEmbedder, "embeddings"),
    MINILM: (MiniLMEmbedder, "embeddings-minilm"),
}
MODEL_NAMES = tuple(_MODELS)
MODEL_DIMENSIONS = {WORDLLAMA: WordLlamaEmbedder.dimension, MINILM: MiniLMEmbedder.dimension}


def load_model(name: str) -> Embedder:
    """Load and verify the model called `name`: blocking (up to seconds), so
    call it at start-up or in a thread. Raises ModelUnavailable with the fix."""
    if name not in _MODELS:
        raise ModelUnavailable(f"unknown embedding model {name!r}; known: {', '.join(_MODELS)}")
    factory, extra = _MODELS[name]
    try:
        return factory()
    except ImportError as exc:
        raise ModelUnavailable(
            f"embedding model {name!r} needs the {extra} extra "
            f"(pip install 'faraday-memory-service[{extra}]'): {exc}"
        ) from exc


def load_embedder(settings: Settings) -> BatchingEmbedder | None:
    """The configured model behind its batching front; None when embedding_model is "none"."""
    if settings.embedding_model == "none":
        return None
    return BatchingEmbedder(
        load_model(settings.embedding_model),
        max_batch_texts=settings.embedding_batch_size,
        max_wait_seconds=settings.embedding_max_wait_seconds,
        max_queued_texts=settings.embedding_max_queued_texts,
    )
