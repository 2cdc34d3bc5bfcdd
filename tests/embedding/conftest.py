from __future__ import annotations

import pytest

from memory_service.embedding import Embedder, load_model


@pytest.fixture(scope="session")
def wordllama() -> Embedder:
    """The real default model, loaded once (about half a second)."""
    return load_model("wordllama-l2-supercat-256")
