"""Text embeddings for semantic recall: local models behind one interface.

No database or gRPC here: storage and recall call `BatchingEmbedder.embed`
and store `name` beside each vector (docs/embeddings.md).
"""

from memory_service.embedding.batching import BatchingEmbedder
from memory_service.embedding.embedder import (
    Embedder,
    EmbedderClosed,
    EmbedderOverloaded,
    EmbeddingError,
    ModelUnavailable,
    Vectors,
)
from memory_service.embedding.loading import (
    MODEL_DIMENSIONS,
    MODEL_NAMES,
    load_embedder,
    load_model,
)

__all__ = [
    "MODEL_DIMENSIONS",
    "MODEL_NAMES",
    "BatchingEmbedder",
    "Embedder",
    "EmbedderClosed",
    "EmbedderOverloaded",
    "EmbeddingError",
    "ModelUnavailable",
    "Vectors",
    "load_embedder",
    "load_model",
]
