"""The Embedder interface: a blocking text-to-vector model, and its errors."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

# One row per text, float32, each row of unit length (L2-normalized), so the
# cosine similarity of two texts is the dot product of their rows.
Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """A local embedding model. Blocking, and not safe to call from two threads
    at once: the service calls it only through BatchingEmbedder's one worker."""

    # Stable id stored beside each vector (model, variant and dimension): a
    # vector is only comparable with vectors of the same name.
    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: list[str]) -> Vectors:
        """An array of shape (len(texts), dimension) of unit rows; a text with no
        tokens at all gets the zero row (cosine 0 with everything), not NaN."""
        ...


class EmbeddingError(Exception):
    """Base of the embedding package's errors."""


class ModelUnavailable(EmbeddingError):
    """The configured model cannot be loaded: unknown name, missing extra, or
    files that differ from the ones whose checksums we ship."""


class EmbedderOverloaded(EmbeddingError):
    """Too many texts are already waiting; refused at once rather than queued."""


class EmbedderClosed(EmbeddingError):
    """The embedder is shutting down and takes no new work."""


def unit_rows(vectors: npt.NDArray[np.floating]) -> Vectors:
    """Rows scaled to unit length; an all-zero row stays zero instead of NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
