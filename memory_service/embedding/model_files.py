"""Model files are read once and checked against the checksums we ship."""

from __future__ import annotations

import hashlib
from pathlib import Path

from memory_service.embedding.embedder import ModelUnavailable


def read_verified(path: Path, sha256: str) -> bytes:
    """The file's bytes, if their SHA-256 is `sha256`; else ModelUnavailable.

    The model is then built from these very bytes, so what was checked is what
    runs (no second read that a changed file could slip into).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(f"cannot read model file {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ModelUnavailable(
            f"model file {path} has SHA-256 {actual}, expected {sha256}: "
            "reinstall the package that ships it (a different version is a different model)"
        )
    return data
