"""WordLlama l2_supercat, 256 dimensions: static token vectors, averaged.

The weights and the tokenizer ship inside the `wordllama` wheel (wordllama
0.4.0.post1 keeps them in `wordllama/weights/` and `wordllama/tokenizers/`).
`WordLlama.load()` would look there first, then in `~/.cache/wordllama`, and
download from the Hugging Face hub on a miss unless `disable_download=True`;
we skip its resolver altogether and build the model from the two files read
and checked here, so nothing is written (a read-only install works) and
nothing is fetched (a fresh machine works).
"""

from __future__ import annotations

from pathlib import Path

from memory_service.embedding.embedder import Vectors, unit_rows
from memory_service.embedding.model_files import read_verified

NAME = "wordllama-l2-supercat-256"
_WEIGHTS = (
    "weights/l2_supercat_256.safetensors",
    "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
)
_TOKENIZER = (
    "tokenizers/l2_supercat_tokenizer_config.json",
    "93248f2a9ec36c7b35f700a033d5f36228aae48db61aee31007fa49062cdeb68",
)


class WordLlamaEmbedder:
    name = NAME
    dimension = 256

    def __init__(self) -> None:
        # Importing wordllama.inference calls logging.basicConfig(INFO): harmless
        # after the CLI has configured logging, which happens before any load.
        import wordllama
        from safetensors.numpy import load as load_safetensors
        from tokenizers import Tokenizer
        from wordllama.inference import WordLlamaInference

        package = Path(wordllama.__file__).parent
        weights = read_verified(package / _WEIGHTS[0], _WEIGHTS[1])
        tokenizer = read_verified(package / _TOKENIZER[0], _TOKENIZER[1])
        self._model = WordLlamaInference(
            load_safetensors(weights)["embedding.weight"],
            Tokenizer.from_str(tokenizer.decode()),
        )

    def embed(self, texts: list[str]) -> Vectors:
        return unit_rows(self._model.embed(texts, norm=False))
