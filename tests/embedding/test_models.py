"""The built-in models, loaded for real from their installed wheels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memory_service.config import Settings, load
from memory_service.embedding import (
    MODEL_NAMES,
    BatchingEmbedder,
    Embedder,
    ModelUnavailable,
    load_embedder,
    load_model,
)
from memory_service.embedding.model_files import read_verified

PARAPHRASE = (
    "The student struggles with adding fractions",
    "This learner finds sums of fractions hard",
    "She plays football every Saturday with her friends",
)


def check_contract(model: Embedder) -> None:
    vectors = model.embed(list(PARAPHRASE))
    assert vectors.shape == (3, model.dimension)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.2, (similar, unrelated)
    assert model.embed([]).shape == (0, model.dimension)
    # Same text, same vector, alone or in a batch of others (padding must not leak).
    np.testing.assert_allclose(model.embed([PARAPHRASE[0]])[0], vectors[0], atol=1e-5)


def test_wordllama_contract(wordllama: Embedder) -> None:
    assert wordllama.name == "wordllama-l2-supercat-256"
    check_contract(wordllama)


def test_wordllama_text_without_tokens_is_the_zero_vector_not_nan(wordllama: Embedder) -> None:
    vectors = wordllama.embed(["", "fractions"])
    assert not np.isnan(vectors).any()
    assert not vectors[0].any()


def test_wordllama_loads_on_a_fresh_machine_without_writing(tmp_path: Path) -> None:
    # A home with no caches: the model must come from the wheel alone and
    # leave nothing behind (a read-only install and home work the same way).
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    code = (
        "from memory_service.embedding import load_model; load_model('wordllama-l2-supercat-256')"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert list(home.iterdir()) == []


def test_a_changed_model_file_is_refused_with_both_checksums(tmp_path: Path) -> None:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"not the weights")
    with pytest.raises(ModelUnavailable, match=r"expected 00ff.*reinstall"):
        read_verified(weights, "00ff")
    with pytest.raises(ModelUnavailable, match="cannot read"):
        read_verified(tmp_path / "missing", "00ff")


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ModelUnavailable, match="all-minilm-l6-v2"):
        load_model("bert-huge")
    assert set(MODEL_NAMES) == {"wordllama-l2-supercat-256", "all-minilm-l6-v2"}


async def test_settings_choose_the_model_and_its_batching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_embedder(Settings.model_construct()) is None
    monkeypatch.setenv("FARADAY_EMBEDDING_MODEL", "wordllama-l2-supercat-256")
    monkeypatch.setenv("FARADAY_EMBEDDING_BATCH_SIZE", "8")
    monkeypatch.setenv("FARADAY_EMBEDDING_MAX_WAIT_SECONDS", "0.001")
    settings = load()
    embedder = load_embedder(settings)
    assert isinstance(embedder, BatchingEmbedder)
    assert (embedder.name, embedder.dimension) == ("wordllama-l2-supercat-256", 256)
    assert (await embedder.embed(["fractions"])).shape == (1, 256)
    await embedder.aclose()


@pytest.mark.slow
def test_minilm_contract() -> None:
    pytest.importorskip("torch", reason="all-minilm-l6-v2 needs the embeddings-minilm extra")
    model = load_model("all-minilm-l6-v2")
    assert (model.name, model.dimension) == ("all-minilm-l6-v2", 384)
    check_contract(model)
