"""Where a recall's and a memory's embeddings come from, and whether they can be used.

Configuration (docs/embeddings.md) names one model. A built-in model
(embedding.MODEL_NAMES) runs in the server, which then embeds every stored
memory and every recall query itself; any other name means the callers
compute the vectors and send them, of `embedding_dimension` dimensions. A
caller's vector must name the configured model and have its dimension: two
models' vectors do not compare. Vectors are kept only where the database has
pgvector (migration 0011); elsewhere the service is lexical-only, and a
request that needs vectors is FAILED_PRECONDITION.

A server-side embedding that fails (the model's queue is full, the model
raised) is not the caller's failure: the memory is stored without a vector
(found lexically until `memory-service embed` backfills it), the recall
ranks without semantics and its response's signals say so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from memory_service.config import Settings
from memory_service.domain.errors import FailedPrecondition, InvalidArgument
from memory_service.domain.models import Embedding
from memory_service.domain.validation import EMBEDDING_MAX_DIMENSION as MAX_DIMENSION
from memory_service.domain.validation import EMBEDDING_MODEL_NAME
from memory_service.embedding import (
    MODEL_DIMENSIONS,
    MODEL_NAMES,
    BatchingEmbedder,
    EmbeddingError,
    load_embedder,
)
from memory_service.telemetry import tracing

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Semantics:
    model: str | None  # None: no embedding model configured
    dimension: int
    embedder: BatchingEmbedder | None  # the server's own model, if it runs one
    stored: bool  # the database keeps vectors

    @property
    def enabled(self) -> bool:
        return self.model is not None and self.stored

    def describe(self) -> str:
        if self.model is None:
            return "lexical-only (no embedding model configured)"
        if not self.stored:
            return (
                f"lexical-only: embedding model {self.model} is configured, but the"
                " database has no pgvector (see docs/embeddings.md)"
            )
        source = "embedded by the server" if self.embedder else "sent by the callers"
        return f"semantic recall on: {self.model}, {self.dimension} dimensions, {source}"

    def check(self, embedding: Embedding, field: str, model_field: str) -> Embedding:
        """A caller's vector, if this server can use it; else the precise error."""
        if not self.enabled:
            raise FailedPrecondition(
                f"{field}: this server does not keep embeddings ({self.describe()})",
                reason="VECTORS_UNAVAILABLE",
            )
        if embedding.model != self.model:
            raise InvalidArgument.one(
                model_field, f"must be {self.model!r}, the model this server ranks with"
            )
        if len(embedding.vector) != self.dimension:
            raise InvalidArgument.one(
                field, f"must have {self.dimension} dimensions, got {len(embedding.vector)}"
            )
        return embedding

    async def embed(self, text: str) -> Embedding | None:
        """The server's embedding of `text`, or None (no model, no pgvector, or it failed)."""
        if not self.enabled or self.embedder is None or not text.strip():
            return None
        assert self.model is not None
        try:
            with tracing.span("embedding"):  # queueing included: what the call waited
                vectors = await self.embedder.embed([text])
        except EmbeddingError as exc:
            logger.warning("embedding skipped: %s", exc)
            return None
        vector = tuple(float(x) for x in vectors[0])
        if not any(vector):  # no known word: no direction to compare
            return None
        return Embedding(self.model, vector)

    async def close(self) -> None:
        if self.embedder is not None:
            await self.embedder.aclose()


def configured_model(settings: Settings) -> tuple[str, int] | None:
    """(name, dimension) of the configured model, without loading it; None for "none"."""
    name = settings.embedding_model
    if name == "none":
        return None
    return name, MODEL_DIMENSIONS.get(name, settings.embedding_dimension)


def semantics_from_settings(settings: Settings, stored: bool) -> Semantics:
    """Load the configured model (blocking: seconds for MiniLM); ValueError if misconfigured."""
    name = settings.embedding_model
    if name == "none":
        return Semantics(None, 0, None, stored)
    if not EMBEDDING_MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"FARADAY_EMBEDDING_MODEL={name!r}: a model name is 1-100 letters, digits"
            " and . _ / @ + -, starting with a letter or digit"
        )
    if name in MODEL_NAMES:
        try:
            embedder = load_embedder(settings)
        except EmbeddingError as exc:  # not installed, or files that fail their checksum
            raise ValueError(f"FARADAY_EMBEDDING_MODEL={name}: {exc}") from exc
        assert embedder is not None
        return Semantics(name, embedder.dimension, embedder, stored)
    if not 0 < settings.embedding_dimension <= MAX_DIMENSION:
        raise ValueError(
            f"FARADAY_EMBEDDING_MODEL={name!r} is not built in ({', '.join(MODEL_NAMES)}),"
            " so callers send its vectors: set FARADAY_EMBEDDING_DIMENSION to their"
            f" dimension (1..{MAX_DIMENSION})"
        )
    return Semantics(name, settings.embedding_dimension, None, stored)
